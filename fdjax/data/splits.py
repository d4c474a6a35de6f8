"""Splits held in host memory and the seeded index selections that build them.

The base module of ``fdjax.data``: it imports no other ``fdjax`` module, so every
source module (``digits``, ``folder``, ``tfds_source``) and ``sources.load`` can use it
without import cycles.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np

@dataclasses.dataclass(frozen=True, eq=False)
class ImageSet:
  """One split in host memory.

  images: uint8 ``[N, H, W, 3]``, 0..255.  labels: int32 ``[N]``.
  """

  images: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    im, lab = self.images, self.labels
    if not isinstance(im, np.ndarray) or im.dtype != np.uint8 or im.ndim != 4 or im.shape[-1] != 3:
      raise ValueError(f"ImageSet.images must be a uint8 numpy array [N, H, W, 3], got "
                       f"{type(im).__name__} {getattr(im, 'dtype', '?')} {getattr(im, 'shape', '?')}")
    if not isinstance(lab, np.ndarray) or lab.dtype != np.int32 or lab.shape != im.shape[:1]:
      raise ValueError(f"ImageSet.labels must be an int32 numpy array [{im.shape[0]}], got "
                       f"{type(lab).__name__} {getattr(lab, 'dtype', '?')} {getattr(lab, 'shape', '?')}")

  def __len__(self) -> int:
    return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A named data set: train / test (and optional validation) splits plus class names."""

  name: str
  train: ImageSet
  test: ImageSet
  validation: ImageSet | None
  class_names: tuple[str, ...]

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


def stratified_split(labels: np.ndarray, fraction: float, seed: int | np.random.SeedSequence
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Splits indices of ``labels`` (int ``[N]``) into ``(kept, held_out)``, both sorted.

  Each class contributes ``round(fraction * count)`` randomly chosen (by ``seed``)
  examples to ``held_out``.
  """
  rng = np.random.default_rng(seed)
  held = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    held.append(rng.permutation(idx)[:int(round(fraction * idx.size))])
  held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
  kept = np.setdiff1d(np.arange(labels.size), held_out)
  return kept, held_out


def balanced_subset(labels: np.ndarray, n: int, seed: int | np.random.SeedSequence
                    ) -> np.ndarray:
  """Sorted indices of at most ``n`` examples of ``labels`` (int ``[N]``), spread evenly
  over classes.

  After a seeded shuffle, examples are taken round-robin over classes (the first of
  every class, then the second of every class, ...), so every class appears when
  ``n >= num_classes``.
  """
  if n >= labels.size:
    return np.arange(labels.size)
  perm = np.random.default_rng(seed).permutation(labels.size)
  shuffled = labels[perm]
  rank = np.empty(labels.size, np.int64)
  for c in np.unique(shuffled):
    mask = shuffled == c
    rank[mask] = np.arange(mask.sum())
  order = np.lexsort((np.arange(labels.size), rank))
  return np.sort(perm[order[:n]])
