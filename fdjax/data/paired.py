"""Restoration image folders: paired ``input/target`` folders and clean-only folders.

Layouts (``path`` is a folder or a .tar / .tar.gz / .tgz of one; folders that only wrap
one folder are descended, e.g. ``rain100l.tar`` -> ``rain100l/``)::

    paired:      <root>/<input_dir>/<name>.<ext>  with  <root>/<target_dir>/<name>.<ext>
    clean-only:  <root>/<target_dir>/<name>.<ext>, or <root>/<name>.<ext> (no target_dir)

Images pair by file name without extension (``001.png`` with ``001.png``; the
extensions may differ). A name present on one side only is a ``DataError`` listing the
first few such names of each side; an input whose size differs from its target's is a
``DataError`` naming the file and both sizes. A missing folder is a
``MissingDataError`` naming the folders there are; pairs whose input equals the
target are named in a warning (they teach nothing). Images decode to RGB uint8 (grey,
palette and RGBA converted). Archives are extracted once into fdjax's cache
(``fdjax.data.archive``); decoded images are not cached (a 100-pair set decodes in
about a second).

Images of different sizes (Rain100L: 481x321 and 321x481; ``raintrain``: eleven sizes)
are kept as a LIST per split, ``PairedImages``, not cropped, because the benchmarks
score whole images of any size. Two views of it make the fixed-shape ``ImageSet``s the
engine batches (fields 'image' = the degraded input and 'target' = the clean image,
both uint8 0..255; clean-only sets hold the clean image in 'image' and no 'target', and
their input is made on device by a degradation):

* ``by_size()``: one ``ImageSet`` per image size, for whole-image evaluation (the
  restoration task's ``predict`` pads each batch to the network's stride);
* ``tiles(size)``: fixed-size crops covering every pixel of every image, for training
  (the task then cuts random patches from them, with flips and rotations).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from fdjax.data import archive
from fdjax.data._decode import UnsupportedImageError, one_channel, rgb_uint8
from fdjax.data.folder import IMAGE_EXTENSIONS, nfc
from fdjax.data.splits import ImageSet
from fdjax.errors import ConfigError, DataError, MissingDataError

SHOWN = 5  # unpaired names listed in an error
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class PairedImages:
  """One split of restoration images, each of its own size.

  Attributes:
    name: the source's name (archive stem or folder name).
    names: file names without extension, sorted.
    targets: clean images, uint8 ``[H_i, W_i, 3]`` (0..255), one per name.
    inputs: degraded images shaped like their targets, or None (clean-only).
    grey: per target, whether its file holds one channel (``_decode.one_channel``; its
      three channels are then equal), or None where none does. ``by_size`` passes it on
      as the field 'grey' (bool ``[n]``), by which scoring on Y takes such a reference on
      its grey values (``fdjax.eval.image_quality``); training tiles do not carry it.
  """

  name: str
  names: tuple[str, ...]
  targets: tuple[np.ndarray, ...]
  inputs: tuple[np.ndarray, ...] | None = None
  grey: tuple[bool, ...] | None = None

  def __post_init__(self):
    if len(self.targets) != len(self.names) or (
        self.inputs is not None and len(self.inputs) != len(self.names)) or (
        self.grey is not None and len(self.grey) != len(self.names)):
      raise ValueError("PairedImages needs one target (and input, and grey flag) per name")
    if self.grey is not None and not any(self.grey):
      object.__setattr__(self, "grey", None)

  @property
  def paired(self) -> bool:
    return self.inputs is not None

  def __len__(self) -> int:
    return len(self.names)

  def grey_flags(self) -> tuple[bool, ...]:
    """``grey`` with one entry per image (all False where it is None)."""
    return self.grey or (False,) * len(self)

  def sizes(self) -> list[tuple[int, int]]:
    """``(H, W)`` of every image."""
    return [t.shape[:2] for t in self.targets]

  def _fields(self, indices: Sequence[int]) -> ImageSet:
    targets = np.stack([self.targets[i] for i in indices])
    grey = {} if self.grey is None else {"grey": np.asarray([self.grey[i] for i in indices])}
    if not self.paired:
      return ImageSet.from_fields({"image": targets, **grey})
    return ImageSet.from_fields({"image": np.stack([self.inputs[i] for i in indices]),
                                 "target": targets, **grey})

  def take(self, indices: Sequence[int]) -> "PairedImages":
    """The images at ``indices``, in that order."""
    pick = lambda xs: None if xs is None else tuple(xs[i] for i in indices)
    return PairedImages(self.name, pick(self.names), pick(self.targets), pick(self.inputs),
                        pick(self.grey))

  def by_size(self) -> list[tuple[np.ndarray, ImageSet]]:
    """``[(indices int [n], split)]``: one ``ImageSet`` per image size, sizes in order of
    first appearance, images in name order."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(self.sizes()):
      groups.setdefault(size, []).append(i)
    return [(np.asarray(idx), self._fields(idx)) for idx in groups.values()]

  def to_imageset(self) -> ImageSet:
    """All images as one ``ImageSet``; ``DataError`` unless they share one size."""
    sizes = sorted(set(self.sizes()))
    if len(sizes) > 1:
      raise DataError(f"{self.name}: images have {len(sizes)} sizes (H, W) {sizes[:SHOWN]}; "
                      f"use by_size() for whole-image evaluation or tiles(size) for training")
    return self._fields(range(len(self)))

  def tiles(self, size: int, stride: int | None = None) -> ImageSet:
    """Crops of ``size x size`` from every image (input and target alike) at offsets
    ``0, stride, 2 stride, ...`` plus one ending at the image's edge, per axis
    (``stride`` defaults to ``size``: no overlap but at the edges), so every pixel is
    in some crop. ``DataError`` naming an image smaller than ``size``."""
    stride = size if stride is None else stride
    if size < 1 or stride < 1:
      raise ValueError(f"tiles: size and stride must be >= 1, got {size}, {stride}")
    crops: list[list[np.ndarray]] = [[], []]
    for i, (h, w) in enumerate(self.sizes()):
      if min(h, w) < size:
        raise DataError(f"{self.name}: image {self.names[i]!r} is {w}x{h} (width x height), "
                        f"smaller than the {size}x{size} tiles")
      for y in _starts(h, size, stride):
        for x in _starts(w, size, stride):
          crops[0].append(self.targets[i][y:y + size, x:x + size])
          if self.paired:
            crops[1].append(self.inputs[i][y:y + size, x:x + size])
    if not self.paired:
      return ImageSet.from_fields({"image": np.stack(crops[0])})
    return ImageSet.from_fields({"image": np.stack(crops[1]), "target": np.stack(crops[0])})


def _starts(length: int, size: int, stride: int) -> list[int]:
  return sorted(set(range(0, length - size + 1, stride)) | {length - size})


def _visible(path: Path) -> list[os.DirEntry]:
  return sorted((e for e in os.scandir(path)
                 if not e.name.startswith(".") and e.name != "__MACOSX"), key=lambda e: e.name)


def _images_by_stem(folder: Path, warn: bool = False) -> dict[str, Path]:
  """``{name without extension: path}`` of the image files directly in ``folder``;
  ``warn``: other entries (sub-folders, files of other extensions) are left out with a
  warning naming some of them, as ``fdjax.data.folder`` does for class folders."""
  found: dict[str, Path] = {}
  skipped = []
  for entry in _visible(folder):
    stem, ext = os.path.splitext(entry.name)
    stem = nfc(stem)   # an input folder in NFD (macOS) pairs with its target's NFC names
    if entry.is_file() and ext.lower() in IMAGE_EXTENSIONS:
      if stem in found:
        raise DataError(f"{folder} has two images named {stem!r}: {found[stem].name} and "
                        f"{entry.name}; keep one")
      found[stem] = folder / entry.name
    else:
      skipped.append(entry.name + ("/" if entry.is_dir() else ""))
  if warn and skipped:
    log.warning("%s: %d entries are not image files and are left out, e.g. %s (images: "
                "%s/<file> with extensions %s; sub-folders are not searched)", folder,
                len(skipped), skipped[:3], folder, ", ".join(sorted(IMAGE_EXTENSIONS)))
  return found


def _find_root(path: Path, wanted: Sequence[str]) -> Path:
  """``path``, or the folder that single-folder wrappers lead to, holding ``wanted``
  (sub-folder names; ``[]``: image files)."""
  current = path
  for _ in range(4):
    entries = _visible(current)
    dirs = [e.name for e in entries if e.is_dir()]
    if wanted and all(d in dirs for d in wanted):
      return current
    if not wanted and _images_by_stem(current):
      return current
    if len(dirs) != 1:
      break
    current = current / dirs[0]
  what = (f"folders {list(wanted)}" if wanted else "images")
  there = [e.name + ("/" if e.is_dir() else "") for e in _visible(current)][:10]
  raise MissingDataError(f"{path}: found no {what} (looked in {current}, which holds "
                         f"{there}); expected <root>/<input_dir>/<name> with "
                         f"<root>/<target_dir>/<name>, or clean images")


def _selected(root: Path, names: list[str], pattern: str | None) -> list[str]:
  if pattern is None:
    return names
  keep = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
  if not keep:
    raise DataError(f"{root}: no image name matches {pattern!r} (names: {names[:SHOWN]}"
                    f"{' ...' if len(names) > SHOWN else ''})")
  return keep


def _read(path: Path) -> tuple[np.ndarray, bool]:
  """``(uint8 RGB [H, W, 3], whether the file holds one channel)``."""
  try:
    with Image.open(path) as im:
      return rgb_uint8(im), one_channel(im)
  except (OSError, SyntaxError, Image.DecompressionBombError, UnsupportedImageError) as e:
    raise DataError(f"cannot decode image {path}: {e}") from None


def _open(path: str | Path, cache_dir: str | None) -> tuple[Path, str]:
  path = Path(path).expanduser()
  if not path.exists():
    raise MissingDataError(f"restoration data {path} does not exist")
  if path.is_file():
    if not archive.is_archive(path):
      raise DataError(f"{path} is neither a folder nor a .tar/.tar.gz/.tgz archive")
    return archive.extract(path, archive.cache_root(cache_dir)) / "tree", archive.stem(path)
  return path, path.name


def load_paired(path: str | Path, *, input_dir: str | None = None,
                target_dir: str | None = None, cache_dir: str | None = None,
                max_images: int | None = None, select: str | None = None) -> PairedImages:
  """Loads a paired (``input_dir`` given) or clean-only folder or archive (module
  docstring). ``select``: only the names (no extension) matching this glob
  (``fnmatch``, case-sensitive; ``DataError`` naming some names when none does);
  ``max_images``: only the first that many of the names (sorted) are decoded (None or
  0: all)."""
  if (input_dir is not None and not target_dir) or input_dir == "":
    raise ConfigError(f"a paired source needs two folder names, its inputs' and its "
                      f"targets' (e.g. rainy,norain), got {input_dir!r}, {target_dir!r}")
  tree, name = _open(path, cache_dir)
  if tree.name == "tree" and Path(path).expanduser().is_file():
    try:   # the messages name files of the extraction: say which archive they came from
      return _load(tree, name, input_dir, target_dir, max_images, select)
    except DataError as e:
      raise type(e)(f"{e} (extracted from {Path(path).expanduser()})", hint=e.hint) from None
  return _load(tree, name, input_dir, target_dir, max_images, select)


def _load(tree: Path, name: str, input_dir, target_dir, max_images, select) -> PairedImages:
  wanted = [d for d in (input_dir, target_dir) if d is not None]
  root = _find_root(tree, wanted)
  targets = _images_by_stem(root / target_dir if target_dir else root, warn=True)
  if not targets:
    raise DataError(f"{root / (target_dir or '')} contains no images (extensions "
                    f"{sorted(IMAGE_EXTENSIONS)})")
  if input_dir is None:
    names = _selected(root, sorted(targets), select)[:max_images or None]
    read = [_read(targets[n]) for n in names]
    return PairedImages(name, tuple(names), tuple(r[0] for r in read),
                        grey=tuple(r[1] for r in read))
  inputs = _images_by_stem(root / input_dir, warn=True)
  if set(inputs) != set(targets):
    only_in, only_tg = sorted(set(inputs) - set(targets)), sorted(set(targets) - set(inputs))
    parts = [f"{len(names)} images in {have}/ have no {what} in {other}/ {names[:SHOWN]}"
             for names, have, what, other in ((only_in, input_dir, "target", target_dir),
                                              (only_tg, target_dir, "input", input_dir))
             if names]
    raise DataError(f"{root}: {' and '.join(parts)} (pairs share a file name without "
                    f"extension)")
  names = _selected(root, sorted(targets), select)[:max_images or None]
  target_images, input_images, grey = [], [], []
  for n in names:
    (target, one), (degraded, _) = _read(targets[n]), _read(inputs[n])
    if target.shape != degraded.shape:
      raise DataError(f"{inputs[n]} is {degraded.shape[1]}x{degraded.shape[0]} (width x "
                      f"height) but its target {targets[n]} is {target.shape[1]}x"
                      f"{target.shape[0]}; a pair must share one size")
    target_images.append(target)
    input_images.append(degraded)
    grey.append(one)
  same = [n for n, t, x in zip(names, target_images, input_images) if np.array_equal(t, x)]
  if same:
    log.warning("%s: %d pair(s) have an input identical to the target, so they teach "
                "nothing (and score infinite PSNR): %s", root, len(same), same[:SHOWN])
  return PairedImages(name, tuple(names), tuple(target_images), tuple(input_images),
                      tuple(grey))
