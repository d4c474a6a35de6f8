"""``digits``: scikit-learn's bundled handwritten digits as a tiny RGB data set.

1797 grey 8x8 images with values 0..16 (``sklearn.datasets.load_digits``, shipped
inside scikit-learn, so it works offline). Each is scaled to 0..255, upscaled with
PIL's bilinear filter to ``size`` x ``size`` pixels (source ``digits``: 32, CIFAR's
size; ``digits:<size>``, e.g. ``digits:16``, the quickstart's: a quarter of the
compute per image and no information lost, the scans being 8x8) and replicated to 3
channels. The train/test split is fixed: a class-stratified 20% test split drawn with
``SPLIT_SEED``, independent of ``load``'s ``seed`` and of the size.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from fdjax.data.sampling import stratified_split
from fdjax.data.splits import RawSource, in_memory_source

SIZE = 32      # ``digits``
MIN_SIZE = 8   # the scans' own size
TEST_FRACTION = 0.2
SPLIT_SEED = 1797
CLASS_NAMES = tuple(str(d) for d in range(10))


def upscale(gray: np.ndarray, size: int = SIZE) -> np.ndarray:
  """float ``[N, h, w]`` in 0..16 -> uint8 ``[N, size, size, 3]`` in 0..255 (bilinear)."""
  scaled = np.clip(np.rint(np.asarray(gray, np.float64) * (255.0 / 16.0)), 0, 255).astype(np.uint8)
  out = np.empty((scaled.shape[0], size, size, 3), np.uint8)
  for i, img in enumerate(scaled):
    big = Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR)
    out[i] = np.asarray(big)[..., None]
  return out


@functools.lru_cache(maxsize=2)
def _arrays(size: int) -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # imported here: sklearn is slow to import
  bunch = load_digits()
  return upscale(bunch.images, size), bunch.target.astype(np.int32)


def source(size: int = SIZE) -> RawSource:
  """The digits at ``size`` x ``size`` (an int >= 8) as a ``RawSource`` with fixed 'train'
  and 'test' splits, named ``digits`` at the default size and ``digits<size>`` otherwise."""
  if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
    raise ValueError(f"digits size must be an integer >= {MIN_SIZE}, got {size!r}")
  images, labels = _arrays(int(size))
  train, test = stratified_split(labels, TEST_FRACTION, seed=SPLIT_SEED)
  name = "digits" if size == SIZE else f"digits{size}"
  return in_memory_source(name, CLASS_NAMES, {
      "train": (images[train], labels[train]),
      "test": (images[test], labels[test]),
  })
