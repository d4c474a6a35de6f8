"""Splits held in host memory (the seeded index selections that build them: ``sampling``).

The base module of ``fdjax.data``: it imports no other ``fdjax`` module, so every
source module (``digits``, ``folder``, ``tfds_source``) and ``sources.load`` can use it
without import cycles.

A split (``ImageSet``) is a mapping of named numpy arrays that share the leading
length ``N``:

* ``'image'``: uint8 ``[N, H, W, 3]``, pixels 0..255 (always present);
* ``'label'``: int32 ``[N]``, class indices ``0..num_classes-1`` (classification);
* ``'target'``: uint8 ``[N, H, W, 3]``, pixels 0..255, the same shape as ``'image'``
  (paired data, e.g. restoration: ``'image'`` is the input, ``'target'`` the clean one);
* any other name: a numpy array ``[N, ...]``.

``'mask'`` is reserved: ``eval_batches`` adds it to padded batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
from typing import Callable, Mapping

import numpy as np

RESERVED_FIELDS = ("mask",)


def _describe(x) -> str:
  return f"{type(x).__name__} {getattr(x, 'dtype', '?')} {getattr(x, 'shape', '?')}"


def _check_fields(fields: Mapping[str, np.ndarray]) -> None:
  """Raises ValueError unless ``fields`` is a valid split (see the module docstring)."""
  if "image" not in fields:
    raise ValueError(f"a split needs an 'image' field (uint8 [N, H, W, 3]); got fields "
                     f"{list(fields)}")
  im = fields["image"]
  if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 4 or im.shape[-1] != 3:
    raise ValueError(f"ImageSet.images must be a uint8 numpy array [N, H, W, 3], got "
                     f"{_describe(im)}")
  n = im.shape[0]
  for name, x in fields.items():
    if not isinstance(name, str):
      raise ValueError(f"split field names must be strings, got {name!r}")
    if name in RESERVED_FIELDS:
      raise ValueError(f"split field name {name!r} is reserved (eval batches add it)")
    if name == "label":
      if not isinstance(x, np.ndarray) or x.dtype != np.int32 or x.shape != (n,):
        raise ValueError(f"ImageSet.labels must be an int32 numpy array [{n}], got "
                         f"{_describe(x)}")
    elif name == "target":
      if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.shape != im.shape:
        raise ValueError(f"split field 'target' must be a uint8 numpy array shaped like "
                         f"'image' {list(im.shape)}, got {_describe(x)}")
    elif name != "image" and (not isinstance(x, np.ndarray) or x.ndim < 1 or x.shape[0] != n):
      raise ValueError(f"split field {name!r} must be a numpy array with leading length {n} "
                       f"(like 'image'), got {_describe(x)}")


class ImageSet:
  """One split in host memory: named arrays of leading length ``N``.

  ``ImageSet(images, labels)`` builds a classification split (images uint8
  ``[N, H, W, 3]`` 0..255, labels int32 ``[N]``); ``ImageSet.from_fields({...})`` any
  split. ``fields`` is a read-only mapping name -> array, in insertion order;
  ``images`` / ``labels`` are ``fields['image']`` / ``fields['label']``.
  """

  __slots__ = ("_fields", "_digest")

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self._set({"image": images, "label": labels})

  @classmethod
  def from_fields(cls, fields: Mapping[str, np.ndarray]) -> "ImageSet":
    """A split from ``{name: array}``; ``'image'`` is required (see the module docstring)."""
    split = cls.__new__(cls)
    split._set(fields)
    return split

  def _set(self, fields: Mapping[str, np.ndarray]) -> None:
    fields = dict(fields)
    _check_fields(fields)
    object.__setattr__(self, "_fields", types.MappingProxyType(fields))

  def __setattr__(self, name, value):
    raise AttributeError(f"ImageSet is immutable; cannot set {name!r}")

  def __reduce__(self):  # pickle / copy through the validating constructor
    return ImageSet.from_fields, (dict(self._fields),)

  @property
  def fields(self) -> Mapping[str, np.ndarray]:
    return self._fields

  @property
  def images(self) -> np.ndarray:
    """uint8 ``[N, H, W, 3]``, 0..255."""
    return self._fields["image"]

  @property
  def labels(self) -> np.ndarray:
    """int32 ``[N]``; AttributeError for a split without a 'label' field."""
    if "label" not in self._fields:
      raise AttributeError(f"this split has no 'label' field (fields: {list(self._fields)})")
    return self._fields["label"]

  def digest(self) -> str:
    """sha256 (16 hex digits) of every field's name, dtype, shape and bytes (computed once:
    the split is immutable)."""
    try:
      return self._digest
    except AttributeError:
      h = hashlib.sha256()
      update_digest(h, self._fields)
      object.__setattr__(self, "_digest", h.hexdigest()[:16])
      return self._digest

  def __len__(self) -> int:
    return int(self._fields["image"].shape[0])

  def __repr__(self) -> str:
    parts = ", ".join(f"{k}={v.dtype}{list(v.shape)}" for k, v in self._fields.items())
    return f"ImageSet({parts})"


def take(split: ImageSet, indices) -> ImageSet:
  """``split`` with every field indexed by ``indices`` (int ``[M]`` or bool ``[N]``)."""
  indices = np.asarray(indices)
  if indices.size == 0:
    indices = indices.astype(np.intp)
  if indices.ndim != 1 or indices.dtype.kind not in "biu":
    raise ValueError(f"take: indices must be 1-D integers or booleans, got "
                     f"{indices.dtype} {indices.shape}")
  return ImageSet.from_fields({k: v[indices] for k, v in split.fields.items()})


def repeat(split: ImageSet, times: int) -> ImageSet:
  """``split`` with every field concatenated ``times`` times (``np.concatenate([x] * times)``)."""
  if isinstance(times, bool) or not isinstance(times, (int, np.integer)) or times < 1:
    raise ValueError(f"repeat: times must be an int >= 1, got {times!r}")
  return ImageSet.from_fields({k: np.concatenate([v] * int(times))
                               for k, v in split.fields.items()})


def with_pairs(clean: np.ndarray, pairs) -> ImageSet:
  """A mixed split: the clean tiles uint8 ``[N, H, W, 3]`` as their own input and target
  ('real' False, degraded on device), then each ``ImageSet`` of real pairs in ``pairs``
  ('image' input, 'target' clean; 'real' True)."""
  return ImageSet.from_fields({
      "image": np.concatenate([clean] + [p.images for p in pairs]),
      "target": np.concatenate([clean] + [p.fields["target"] for p in pairs]),
      "real": np.concatenate([np.zeros(len(clean), bool)]
                             + [np.ones(len(p), bool) for p in pairs])})


def _pair_repeats(clean: int, pairs: int, names: int) -> int:
  """How often ``Dataset.training_split`` repeats ``pairs`` real pairs among ``clean``
  clean examples shared by ``names`` degradations (one share's worth, at least once)."""
  return max(1, round(clean / (pairs * names)))


def update_digest(h, fields: Mapping[str, np.ndarray]) -> None:
  """Feeds ``fields`` (name -> array), names sorted, to the hash ``h``: each name, dtype
  and shape, then the bytes."""
  for key in sorted(fields):
    value = np.ascontiguousarray(fields[key])
    h.update(f"{key}{value.dtype}{value.shape}".encode())
    h.update(value.reshape(-1).view(np.uint8))


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A named data set: train / test (and optional validation) splits plus class names.

  Restoration data sets add ``test_sets``: ``{degradation: fdjax.data.testsets.TestSet}``
  (key 'clean': the clean-only test set scored clean and under every degradation without
  its own), and ``train_pairs``: ``{degradation: ImageSet}`` of real training pairs
  ('image' input, 'target' clean) mixed into that degradation's training."""

  name: str
  train: ImageSet
  test: ImageSet
  validation: ImageSet | None
  class_names: tuple[str, ...]
  test_sets: Mapping = dataclasses.field(default_factory=dict)
  train_pairs: Mapping = dataclasses.field(default_factory=dict)

  def training_split(self, names=()) -> ImageSet:
    """``train``, plus the real training pairs of degradations ``names`` when there are
    any: then every example has 'image' (input), 'target' (clean) and 'real' (bool
    ``[N]``; clean tiles are their own input, to be degraded on device, with real
    False). Each degradation's pairs are repeated ``round(N_clean / (P * len(names)))``
    times (at least once): as many real examples as one degradation's share of
    synthetic ones (an expert trains on half real, half synthetic inputs)."""
    pairs = [self.train_pairs[n] for n in names if n in self.train_pairs]
    if not pairs:
      return self.train
    n = len(self.train)
    return with_pairs(self.train.images,
                      [repeat(p, _pair_repeats(n, len(p), len(names))) for p in pairs])

  def training_size(self, names=()) -> int:
    """``len(self.training_split(names))``, without building it."""
    n = len(self.train)
    return n + sum(len(p) * _pair_repeats(n, len(p), len(names))
                   for d, p in self.train_pairs.items() if d in names)

  def content_digest(self, pair_names=()) -> str:
    """sha256 (16 hex digits) of what a stage trains and selects on: the training and
    validation splits, and the real training pairs of degradations ``pair_names`` (the
    data replaced at the same path, with the same sizes, differs)."""
    parts = [self.train.digest(), self.validation.digest() if self.validation else "-"]
    parts += [f"{n}:{self.train_pairs[n].digest()}" for n in sorted(pair_names)
              if n in self.train_pairs]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]

  def test_for(self, name: str = "clean"):
    """The ``TestSet`` degradation ``name`` is scored on ('clean': the clean scores), or
    the ``test`` split itself for a data set without test sets (classification)."""
    found = self.test_sets.get(name, self.test_sets.get("clean"))
    return found if found is not None else self.test

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """``(H, W, 3)`` of every image."""
    return tuple(int(d) for d in self.train.images.shape[1:])


@dataclasses.dataclass(frozen=True)
class RawSource:
  """What a source module hands to ``load`` before splitting and truncation.

  ``labels`` maps a source split name ('train', 'test', optionally 'validation') to
  int32 ``[N]``. ``read_images(needed)`` takes, per split, sorted indices (or None for
  the whole split) and returns uint8 ``[len(indices) or N, H, W, 3]`` (0..255) per
  split, in that order; sources that can decode lazily (folders) read only what is asked.
  """

  name: str
  class_names: tuple[str, ...]
  labels: Mapping[str, np.ndarray]
  read_images: Callable[[Mapping[str, np.ndarray | None]], dict[str, np.ndarray]]


def in_memory_source(name: str, class_names, splits: Mapping[str, tuple[np.ndarray, np.ndarray]]
                     ) -> RawSource:
  """A ``RawSource`` over splits already decoded: ``{split: (images, labels)}``."""

  def read_images(needed):
    return {s: splits[s][0] if idx is None else splits[s][0][idx] for s, idx in needed.items()}

  return RawSource(name, tuple(class_names), {s: lab for s, (_, lab) in splits.items()},
                   read_images)
