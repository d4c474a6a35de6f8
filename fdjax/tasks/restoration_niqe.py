"""NIQE as an opt-in restoration metric (``restoration.extra_metrics = 'niqe'``).

``per_image_niqe(outputs, crop_border) -> [B]``: ``fdjax.eval.niqe.niqe`` of restored
images, traceable inside the task's jitted scorer (``RestorationTask.per_image``).
``outputs`` are ``task.predict``'s: float32 ``[B, H, W, 3]`` in 0..255, already cropped
back from the network's stride padding to the test image's true size, so the stride
padding is never measured. ``crop_border`` is the task's ``shave`` for that degradation
(the SR convention: the scale, e.g. 4). NIQE reads the BT.601 Y channel whatever space
PSNR/SSIM are scored in, and needs no reference image, so the input row and the
'clean' column get values too. Lower is better (the column header says so).

Images with fewer than two whole 96x96 blocks after the crop have no NIQE (the block
covariance is undefined): their value is NaN, decided from the static shape at trace
time, with one warning log line per compiled size; a set containing such an image then
shows NaN in its column (as SSIM does for images under its window).

Cost: NIQE compiles once per image size (about 9 s per size on a loaded 2-core CPU),
inside the same jitted scorer as PSNR/SSIM; the per-image work then is milliseconds.
Callers that ask for PSNR only (model selection, soups, fitness) never compute it.
"""

from __future__ import annotations

import jax.numpy as jnp
from absl import logging

from fdjax.errors import ConfigError
from fdjax.eval.niqe import niqe
from fdjax.eval.niqe_features import BLOCK
from fdjax.tasks.base import MetricSpec

SPEC = MetricSpec("niqe", "NIQE (lower is better)", "", higher_is_better=False, decimals=3)
EXTRA_METRICS = {"niqe": SPEC}   # the names restoration.extra_metrics may list


def check_extra_metrics(names) -> None:
  """A one-line ConfigError unless ``names`` are distinct keys of ``EXTRA_METRICS``."""
  names = tuple(names)
  if any(m not in EXTRA_METRICS for m in names) or len(set(names)) < len(names):
    raise ConfigError(f"restoration.extra_metrics must list distinct names of "
                      f"{sorted(EXTRA_METRICS)}, got {','.join(names)!r}")


def has_blocks(height: int, width: int, crop_border: int) -> bool:
  """True when a ``height x width`` image has >= 2 whole NIQE blocks after the crop."""
  h, w = height - 2 * crop_border, width - 2 * crop_border
  return h > 0 and w > 0 and (h // BLOCK) * (w // BLOCK) >= 2


def per_image_niqe(outputs, crop_border: int) -> jnp.ndarray:
  """float32 ``[B]``: NIQE of each ``[B, H, W, 3]`` image in 0..255 (``crop_border``
  pixels dropped per side first); NaN for all of them when ``H x W`` is too small
  (module docstring)."""
  h, w = outputs.shape[-3:-1]
  if not has_blocks(h, w, crop_border):
    logging.warning("NIQE is NaN for %dx%d images: fewer than two %dx%d blocks after "
                    "cropping %d border pixels", h, w, BLOCK, BLOCK, crop_border)
    return jnp.full(outputs.shape[:-3], jnp.nan, jnp.float32)
  return niqe(outputs, crop_border=int(crop_border))
