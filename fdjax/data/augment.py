"""On-device training augmentation: pure jnp, keyed by a PRNG key, jit-safe, static shapes.

Images are ``[B, H, W, C]``, uint8 (0..255) or float; every function returns arrays of
the input's shape and dtype. The paper's order per image:

1. ``random_flip`` on the clean image;
2. degradation (``fdjax.degradations``) of the flipped image;
3. ``random_crop(key, clean, degraded)``: 4-pixel zero padding and the SAME random
   crop for both views;
4. ``cutout`` (16x16) on the degraded view only.

The caller (``fdjax.tasks.classification.ClassificationTask.views``, from
``config.augment``) decides which steps a config enables.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check(images, fn: str) -> None:
  if images.ndim != 4:
    raise ValueError(f"{fn}: expected images [B, H, W, C], got shape {images.shape}")


def random_flip(key: jax.Array, images: jax.Array) -> jax.Array:
  """Flips each image left-right with probability 1/2 (independently per image)."""
  images = jnp.asarray(images)
  _check(images, "random_flip")
  flip = jax.random.bernoulli(key, 0.5, (images.shape[0],))
  return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def random_crop(key: jax.Array, *views: jax.Array, pad: int = 4) -> tuple[jax.Array, ...]:
  """Zero-pads every view by ``pad`` pixels per side, then crops back to ``H x W``.

  The crop offsets (dy, dx), uniform in ``[0, 2 * pad]``, are drawn once per image and
  shared by all views, so view k of image i is ``padded_k[i, dy:dy+H, dx:dx+W]``. All
  views must share ``[B, H, W]``; channels and dtypes may differ. Returns a tuple with
  one array per view.
  """
  if not views:
    raise ValueError("random_crop needs at least one view")
  if pad < 0:
    raise ValueError(f"random_crop: pad must be >= 0, got {pad}")
  views = tuple(jnp.asarray(v) for v in views)
  for v in views:
    _check(v, "random_crop")
  if len({v.shape[:3] for v in views}) > 1:
    raise ValueError(f"random_crop: views must share [B, H, W], got {[v.shape for v in views]}")
  if pad == 0:
    return views
  b, h, w = views[0].shape[:3]
  key_y, key_x = jax.random.split(key)
  dy = jax.random.randint(key_y, (b,), 0, 2 * pad + 1)
  dx = jax.random.randint(key_x, (b,), 0, 2 * pad + 1)

  def crop(view):
    padded = jnp.pad(view, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    one = lambda img, y, x: jax.lax.dynamic_slice(img, (y, x, 0), (h, w, view.shape[3]))
    return jax.vmap(one)(padded, dy, dx)

  return tuple(crop(v) for v in views)


def cutout(key: jax.Array, images: jax.Array, size: int = 16, fill=0) -> jax.Array:
  """Sets one ``size x size`` square per image to ``fill`` (DeVries & Taylor, 2017): a
  scalar or one value per channel ``[C]``, in the images' units (0 by default).

  As in the authors' code, the centre (cy, cx) is uniform over the image's pixels and
  the square is rows ``[cy - size//2, cy + size//2)`` x the same for columns, clipped at
  the borders (so squares near an edge are smaller).
  """
  images = jnp.asarray(images)
  _check(images, "cutout")
  if size < 0:
    raise ValueError(f"cutout: size must be >= 0, got {size}")
  b, h, w = images.shape[:3]
  key_y, key_x = jax.random.split(key)
  cy = jax.random.randint(key_y, (b, 1), 0, h)
  cx = jax.random.randint(key_x, (b, 1), 0, w)
  rows, cols = jnp.arange(h)[None, :], jnp.arange(w)[None, :]
  in_y = (rows >= cy - size // 2) & (rows < cy + size // 2)  # [B, H]
  in_x = (cols >= cx - size // 2) & (cols < cx + size // 2)  # [B, W]
  hole = in_y[:, :, None, None] & in_x[:, None, :, None]
  return jnp.where(hole, jnp.asarray(fill, images.dtype), images)
