"""Restoration data sets: clean photos or named benchmark sets, as one ``Dataset``.

``load(data, patch=..., seed=...)`` reads the ``config.data`` fields of a restoration
config (``fdjax.config_restoration``)::

    source = 'photos'        # scikit-learn's two bundled photographs (no download): train
                             # on tiles of china.jpg, test on the whole flower.jpg
           | 'sets'          # named sets under `root` (<root>/<name>.tar or <root>/<name>/)
    root = '../shared/data/restoration'   # relative paths: to the repository
    train = 'cbsd432'        # clean-only training sets, comma-separated
    test = 'cbsd68'          # the clean-only test set(s) (synthetic degradations); several
                             # ('set5,set14') are scored as one set, image names prefixed
                             # with their set ('set5/baby')
    test_pairs.<degradation> = 'rain100l'   # a real paired test set for that degradation
    train_pairs.<degradation> = 'raintrain' # real training pairs mixed into its training
                             # every set name may end in ':<glob>': only the images whose
                             # name (no extension) matches, e.g. 'raintrain:rain12-*'
    pair_dirs = 'rainy,norain'              # input and target folders of paired sets
    tile = 0                 # training tile side (0: twice restoration.patch)
    validation_fraction      # seeded fraction of the training images held out whole
                             # (model selection; ``held_out_images``)
    max_per_split            # > 0: at most this many images per set (smoke runs)
    max_train_images         # > 0: at most this many clean training images (the first)
    crop_multiple = 0        # > 0: every image cropped to a multiple of it (top-left rows
                             # and columns kept, MATLAB's modcrop: the super-resolution
                             # protocol crops HR images to a multiple of the scale)

Splits: ``train`` and ``validation`` are clean tiles (uint8 ``[N, tile, tile, 3]``,
0..255) cut from the training images (``PairedImages.tiles``; the task cuts random
``patch`` crops from them), validation's from images held out whole (none overlaps a
training tile, or comes from a training photo unless there is only one;
``interleaved_tiles`` orders them); ``test_sets['clean']`` the whole test images
grouped by size; ``test_sets[d]`` / ``train_pairs[d]`` the real pairs of degradation ``d``.
A missing set is a ``MissingDataError`` naming the folder and what is in it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from absl import logging

from fdjax.config import parse_list
from fdjax.data import paths
from fdjax.data.paired import PairedImages, load_paired
from fdjax.data.splits import Dataset, ImageSet
from fdjax.data.testsets import TestSet
from fdjax.errors import ConfigError, DataError, MissingDataError

SOURCES = ("photos", "sets")
_VALIDATION_STREAM = 0x7E57


def resolve_root(root: str) -> Path:
  """``root`` as given when absolute; else relative to the repository, or, in a git
  worktree whose relative root is missing, to the main checkout (``fdjax.data.paths``;
  not the current folder: ``data.root`` has always meant the repository's)."""
  return paths.resolve(root, cwd_first=False)


def _set_path(root: Path, name: str) -> Path:
  for candidate in (root / f"{name}.tar", root / f"{name}.tar.gz", root / f"{name}.tgz",
                    root / name):
    if candidate.exists():
      return candidate
  there = sorted(p.name for p in root.iterdir())[:12] if root.is_dir() else []
  raise MissingDataError(f"restoration set {name!r} not found in {root} (holds {there}); "
                         f"set config.data.root to the folder of the .tar archives")


def photos() -> tuple[PairedImages, PairedImages]:
  """(train, test): scikit-learn's china.jpg and flower.jpg, uint8 427x640."""
  from sklearn.datasets import load_sample_images

  bundle = load_sample_images()
  names = [Path(f).stem for f in bundle.filenames]
  images = dict(zip(names, bundle.images))
  return (PairedImages("photos", ("china",), (np.asarray(images["china"], np.uint8),)),
          PairedImages("photos", ("flower",), (np.asarray(images["flower"], np.uint8),)))


def split_spec(spec: str) -> tuple[str, str | None]:
  """``'name'`` -> ``('name', None)``; ``'name:glob'`` -> ``('name', 'glob')``."""
  name, sep, pattern = spec.partition(":")
  if not name or (sep and not pattern):
    raise ConfigError(f"restoration set {spec!r}: write '<set>' or '<set>:<glob>' (e.g. "
                      f"'raintrain:rain12-*')")
  return name, pattern or None


def _first(images: PairedImages, n: int | None) -> PairedImages:
  return images if not n or n >= len(images) else images.take(range(n))


def _concat(sets: list[PairedImages], prefix: bool = False) -> PairedImages:
  """One set of the clean images of ``sets``; ``prefix``: names become '<set>/<name>'."""
  if len(sets) == 1:
    return sets[0]
  names = sum((tuple(f"{s.name}/{n}" for n in s.names) if prefix else s.names for s in sets), ())
  grey = sum((s.grey_flags() for s in sets), ())
  return PairedImages("+".join(s.name for s in sets), names, sum((s.targets for s in sets), ()),
                      grey=grey)


def modcrop(images: PairedImages, multiple: int) -> PairedImages:
  """Every image (and input) cropped to ``H - H % multiple`` rows and ``W - W % multiple``
  columns, the top-left kept (MATLAB ``modcrop``); ``multiple`` <= 1: unchanged."""
  if multiple <= 1:
    return images
  crop = lambda x: x[:x.shape[0] - x.shape[0] % multiple, :x.shape[1] - x.shape[1] % multiple]
  inputs = None if images.inputs is None else tuple(crop(x) for x in images.inputs)
  return PairedImages(images.name, images.names, tuple(crop(t) for t in images.targets), inputs,
                      images.grey)


VALIDATION_UNIT = "images"   # what the validation split holds out (the fingerprint's)


def held_out_images(images: PairedImages, fraction: float, seed: int, tile: int
                    ) -> tuple[PairedImages, PairedImages | None]:
  """``(train, validation)``: whole images of ``images`` held out before tiling, so no
  validation tile shares a pixel, or a photo (but with a single image), with a training
  tile.

  ``fraction`` 0: ``(images, None)``. Else a seeded ``max(1, round(fraction * n))`` of the
  ``n`` images (stream ``(seed, 0x7E57)``, names kept in order; a warning when that one
  image is over twice the fraction); ``DataError`` when that leaves none to train on.
  A single image (the ``photos`` source) is cut instead: its
  bottom ``max(tile, round(fraction * H))`` rows are the validation image ('<name>:val'),
  the rows above the training one ('<name>:train'); ``DataError`` when either part is
  shorter than ``tile``.
  """
  if not fraction:
    return images, None
  if len(images) == 1:
    return _cut_rows(images, fraction, tile)
  n = max(1, int(round(fraction * len(images))))
  if n >= len(images):
    raise DataError(f"validation_fraction={fraction} holds out {n} of the {len(images)} "
                    f"training images of {images.name!r} and leaves none to train on")
  if n > 2 * fraction * len(images):
    logging.warning("validation_fraction=%g of the %d training images of %r holds out %d "
                    "(%.0f%%: at least one whole image)", fraction, len(images), images.name,
                    n, 100 * n / len(images))
  order = np.random.default_rng((seed, _VALIDATION_STREAM)).permutation(len(images))
  return images.take(np.sort(order[n:])), images.take(np.sort(order[:n]))


def interleaved_tiles(images: PairedImages, tile: int) -> ImageSet:
  """``images.tiles(tile)`` ordered round-robin over the images (the first tile of every
  image, then the second of every image that has one, ...), so that the first N tiles
  (EA-Adam's ``fitness_examples``) span as many photos as N allows."""
  per_image = [images.take([i]).tiles(tile) for i in range(len(images))]
  order = sorted((j, i) for i, split in enumerate(per_image) for j in range(len(split)))
  return ImageSet.from_fields({k: np.stack([per_image[i].fields[k][j] for j, i in order])
                               for k in per_image[0].fields})


def _cut_rows(images: PairedImages, fraction: float, tile: int):
  (name,), (target,) = images.names, images.targets
  height = target.shape[0]
  rows = max(tile, int(round(fraction * height)))
  if height - rows < tile:
    raise DataError(f"{images.name!r} has one training image ({name!r}, {height} rows): its "
                    f"held-out bottom {rows} rows (validation_fraction={fraction}, at least "
                    f"one {tile}-pixel tile) leave {height - rows} rows, fewer than a tile")
  part = lambda x, rows_: None if x is None else (x[0][rows_],)
  top, bottom = slice(0, height - rows), slice(height - rows, height)
  return (PairedImages(images.name, (f"{name}:train",), part(images.targets, top),
                       part(images.inputs, top), images.grey),
          PairedImages(images.name, (f"{name}:val",), part(images.targets, bottom),
                       part(images.inputs, bottom), images.grey))


def pair_dirs_problem(data) -> str | None:
  """Why ``data.pair_dirs`` cannot name the input and target folders of the paired sets
  that ``data.test_pairs`` / ``data.train_pairs`` ask for, or None (also when none does).
  One rule for the config's validation and ``load``."""
  paired = any(v for key in ("test_pairs", "train_pairs") for v in (data.get(key) or {}).values())
  pair_dirs = data.get("pair_dirs")
  if paired and isinstance(pair_dirs, str) and len(parse_list(pair_dirs)) != 2:
    return (f"data.pair_dirs must name two folders, the paired sets' inputs' and targets' "
            f"(e.g. 'rainy,norain'), got {pair_dirs!r}")
  return None


def load(data, *, patch: int, seed: int = 0) -> Dataset:
  """The ``Dataset`` of ``config.data`` (module docstring); ``patch``: the task's
  training patch side (tiles default to twice it)."""
  source = data.source
  limit = int(data.get("max_per_split", 0)) or None
  cache = data.get("cache_dir") or None
  tile = int(data.get("tile", 0)) or 2 * int(patch)
  multiple = int(data.get("crop_multiple", 0))
  if source == "photos":
    train_images, test_images = (modcrop(p, multiple) for p in photos())
    pairs_of: dict = {}
  elif source == "sets":
    root = resolve_root(data.root)
    if not root.is_dir():
      raise MissingDataError(f"restoration data folder {root} does not exist (config.data.root"
                             f"={data.root!r}, relative to {paths.repository()})")
    def read(spec, **dirs):
      name, pattern = split_spec(spec)
      images = load_paired(_set_path(root, name), cache_dir=cache, select=pattern,
                           max_images=limit, **dirs)   # only those decoded
      return modcrop(images, multiple)

    train_images = _first(_concat([read(n) for n in parse_list(data.train)]),
                          int(data.get("max_train_images", 0)) or None)
    test_images = _concat([read(n) for n in parse_list(data.test)], prefix=True)
    input_dir, target_dir = (parse_list(data.pair_dirs) + ["", ""])[:2]

    pairs_of = lambda spec: read(spec, input_dir=input_dir, target_dir=target_dir)
  else:
    raise ConfigError(f"restoration data.source must be one of {SOURCES}, got {source!r}")
  test_pairs = {d: n for d, n in (data.get("test_pairs") or {}).items() if n}
  train_pairs = {d: n for d, n in (data.get("train_pairs") or {}).items() if n}
  if source == "photos" and (test_pairs or train_pairs):
    raise ConfigError("data.source='photos' has no paired sets: leave data.test_pairs and "
                      "data.train_pairs empty")
  problem = pair_dirs_problem(data)
  if problem:
    raise ConfigError(problem)
  train_part, held_out = held_out_images(train_images, float(data.validation_fraction), seed,
                                         tile)
  train = train_part.tiles(tile)
  validation = None if held_out is None else interleaved_tiles(held_out, tile)
  tests = {"clean": TestSet.of_images(test_images)}
  tests.update({d: TestSet.of_images(pairs_of(n)) for d, n in test_pairs.items()})
  pairs = {d: pairs_of(n).tiles(tile) for d, n in train_pairs.items()}
  return Dataset(train_images.name, train, tests["clean"].groups[0], validation, (),
                 test_sets=tests, train_pairs=pairs)
