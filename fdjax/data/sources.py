"""Data sets held in host memory, and ``load``, the one entry point that builds them.

A source string picks where images come from:

* ``digits`` / ``digits:<size>``: scikit-learn's bundled 8x8 handwritten digits,
  upscaled to 32x32 RGB or to ``size`` x ``size`` (embedded, offline; ``digits:16`` is
  the quickstart's, ``digits`` most tests').
* ``folder:<path>``: an image-folder tree ``split/<class>/<image>`` or a ``.tar.gz`` /
  ``.tgz`` / ``.tar`` of one (see ``fdjax.data.folder``).
* ``tfds:<name>``: a prepared TFDS image-classification data set (see
  ``fdjax.data.tfds_source``).

Every split ``load`` builds is an ``ImageSet`` (``fdjax.data.splits``) with two
fields: 'image' uint8 ``[N, H, W, 3]`` in 0..255 and 'label' int32 ``[N]`` in
``0..num_classes-1``.

Split rule (``validation_fraction``):
* ``> 0``: a seeded, class-stratified ``validation_fraction`` of the source's train
  split is held out as ``validation`` (the paper's 90/10 tuning split); a validation
  split that the source itself ships is then ignored.
* ``== 0``: the source's own validation split (``validation`` / ``val``) is used when
  it has one, else ``Dataset.validation`` is None.

``max_per_split`` then truncates each resulting split (train, validation, test) to at
most that many examples: a seeded, class-balanced subset (round-robin over classes
after a shuffle), kept in source order. Folder sources decode only those images.
"""

from __future__ import annotations

import numpy as np

from fdjax.data import digits, folder, tfds_source
from fdjax.errors import ConfigError, DataError
# Re-exported: the split types and selections moved to fdjax.data.splits.
from fdjax.data.sampling import balanced_subset, stratified_split
from fdjax.data.splits import Dataset, ImageSet, RawSource, in_memory_source  # noqa: F401

SCHEMES = ("digits", "digits:<size>", "folder:<path>", "tfds:<name>")
# Separate random streams for the two seeded selections (epoch orders use (seed, epoch)).
_VALIDATION_STREAM = 0x7A11D
_SUBSET_STREAM = 0x5B5E7


def open_source(source: str, *, cache_dir: str | None, data_dir: str | None) -> RawSource:
  """Parses ``source`` and opens it (lazily for folders)."""
  if not isinstance(source, str):
    raise DataError(f"data source must be a string ({', '.join(SCHEMES)}), got {source!r}")
  scheme, sep, arg = source.partition(":")
  if scheme == "digits" and not sep:
    return digits.source()
  if scheme == "digits":
    if not (arg.isascii() and arg.isdigit()) or int(arg) < digits.MIN_SIZE:
      raise DataError(f"data source {source!r}: the size must be an integer >= "
                      f"{digits.MIN_SIZE} (e.g. digits:16)")
    return digits.source(int(arg))
  if scheme == "folder" and sep:
    if not arg:
      raise DataError(f"data source {source!r} names no path; use folder:<dir or .tar.gz>")
    return folder.source(arg, cache_dir=cache_dir)
  if scheme == "tfds" and sep:
    if not arg:
      raise DataError(f"data source {source!r} names no data set; use e.g. tfds:cifar10")
    return tfds_source.source(arg, data_dir=data_dir)
  raise DataError(f"unknown data source {source!r}; valid sources: {', '.join(SCHEMES)}")


def load(source: str, *, validation_fraction: float = 0.0, seed: int = 0,
         cache_dir: str | None = None, data_dir: str | None = None,
         max_per_split: int | None = None) -> Dataset:
  """Loads ``source`` into host memory (see the module docstring for the rules).

  Args:
    source: 'digits', 'digits:<size>', 'folder:<dir or archive>' or 'tfds:<name>'.
    validation_fraction: in [0, 1); > 0 holds out a stratified part of train.
    seed: seeds the validation hold-out and the ``max_per_split`` subsets.
    cache_dir: folder sources' cache root (default $FDJAX_CACHE or ~/.cache/fdjax).
    data_dir: TFDS data dir (default: TFDS's own default).
    max_per_split: if > 0, at most this many examples per split (None or 0: all).
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ConfigError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
  if max_per_split is not None and max_per_split < 0:
    raise ConfigError(f"max_per_split must be None or >= 0, got {max_per_split!r}")
  raw = open_source(source, cache_dir=cache_dir, data_dir=data_dir)
  for split in ("train", "test"):
    if split not in raw.labels:
      raise DataError(f"data source {source!r} has no {split!r} split; available splits: "
                       f"{sorted(raw.labels)}")

  # plan: output split -> (source split, indices into it or None for all of it).
  plan: dict[str, tuple[str, np.ndarray | None]] = {"train": ("train", None), "test": ("test", None)}
  if validation_fraction > 0:
    kept, held = stratified_split(raw.labels["train"], validation_fraction,
                                  seed=np.random.SeedSequence((seed, _VALIDATION_STREAM)))
    if held.size == 0 or kept.size == 0:
      raise DataError(f"validation_fraction={validation_fraction} of {raw.labels['train'].size} "
                       f"training examples in {source!r} leaves an empty split")
    plan["train"], plan["validation"] = ("train", kept), ("train", held)
  elif "validation" in raw.labels:
    plan["validation"] = ("validation", None)

  if max_per_split:
    for i, (out, (src, idx)) in enumerate(sorted(plan.items())):
      all_idx = np.arange(raw.labels[src].size) if idx is None else idx
      pick = balanced_subset(raw.labels[src][all_idx], max_per_split,
                             seed=np.random.SeedSequence((seed, _SUBSET_STREAM, i)))
      plan[out] = (src, all_idx[pick])

  # Ask the source only for the images some output split uses.
  needed: dict[str, np.ndarray | None] = {}
  for src in {src for src, _ in plan.values()}:
    parts = [idx for s, idx in plan.values() if s == src]
    union = None if any(p is None for p in parts) else np.unique(np.concatenate(parts))
    needed[src] = None if union is None or union.size == raw.labels[src].size else union
  images = raw.read_images(needed)

  sets = {}
  for out, (src, idx) in plan.items():
    labels = raw.labels[src] if idx is None else raw.labels[src][idx]
    if idx is None:
      imgs = images[src]
    elif needed[src] is None:
      imgs = images[src][idx]
    else:
      imgs = images[src][np.searchsorted(needed[src], idx)]
    sets[out] = ImageSet(imgs, labels.astype(np.int32, copy=False))
  shapes = {s: v.images.shape[1:] for s, v in sets.items()}
  if len(set(shapes.values())) > 1:
    raise DataError(f"splits of {source!r} have different image shapes: {shapes}")
  return Dataset(raw.name, sets["train"], sets["test"], sets.get("validation"),
                 tuple(raw.class_names))
