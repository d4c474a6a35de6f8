"""What ``fdjax.degradations.apply`` / ``apply_float`` check before they degrade:
the images (dtype, rank, RGB channels, 0..1 for float images) and the levels (one per
image, within the grid's range, on the grid where only its points mean something); each
a TypeError or ValueError that names what is wrong. Values are checked only when
concrete (outside jit and vmap)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


# The largest value a float image in 0..1 may hold in apply_float (a model's output may
# overshoot 1 a little; 0..255 images overshoot it by far).
FLOAT_RANGE_SLACK = 1.5


def check_images(images, *, uint8: bool):
  """Returns images as an array; TypeError / ValueError naming what is wrong."""
  if not hasattr(images, "dtype"):
    images = np.asarray(images)
  if uint8 and images.dtype != np.uint8:
    raise TypeError(f"images must be uint8 (0..255), got dtype {images.dtype}; "
                    "use apply_float for float images in 0..1")
  if not uint8 and not jnp.issubdtype(images.dtype, jnp.floating):
    raise TypeError(f"images must be floating point (0..1), got dtype {images.dtype}; "
                    "use apply for uint8 images")
  if images.ndim != 4:
    raise ValueError(f"images must have shape [B, H, W, 3], got rank {images.ndim} "
                     f"shape {tuple(images.shape)}")
  if images.shape[-1] != 3:
    raise ValueError(f"images must have 3 (RGB) channels last, got {images.shape[-1]} "
                     f"in shape {tuple(images.shape)}")
  if not uint8 and not isinstance(images, jax.core.Tracer) and images.size:
    # 0..255 floats would be clipped to a white image without a word.
    high = float(jnp.max(images))
    if high > FLOAT_RANGE_SLACK:
      raise ValueError(f"float images must be in 0..1, got values up to {high:g}; divide "
                       "0..255 images by 255, or pass uint8 images to apply")
  return images


def check_levels(entry, levels, batch: int) -> jax.Array:
  """float32 ``[batch]`` levels (a scalar is broadcast) for registry entry ``entry``
  (``fdjax.degradations.registry.Degradation``); range-checked when concrete."""
  levels = jnp.asarray(levels, jnp.float32)
  if levels.ndim == 0:
    levels = jnp.broadcast_to(levels, (batch,))
  if levels.shape != (batch,):
    raise ValueError(f"levels must have shape [{batch}] (one per image) or be a scalar, "
                     f"got shape {tuple(levels.shape)}")
  if isinstance(levels, jax.core.Tracer):
    return levels  # inside jit / vmap the values are unknown: no range check
  low, high = entry.grid[0], entry.grid[-1]
  tolerance = 1e-6 * max(1.0, abs(high))
  values = np.asarray(levels)
  bad = values[~((values >= low - tolerance) & (values <= high + tolerance))]  # NaN is bad
  if bad.size:
    raise ValueError(f"{entry.name} levels must lie in [{low:g}, {high:g}] ({entry.units}); "
                     f"got {bad.tolist()[:8]}")
  if entry.grid_only:
    grid = np.asarray(entry.grid)
    off = values[np.abs(values[:, None] - grid[None]).min(axis=1) > tolerance]
    if off.size:
      raise ValueError(f"{entry.name} levels must be among {entry.grid} ({entry.units}); "
                       f"got {off.tolist()[:8]}")
  return levels
