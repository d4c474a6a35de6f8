"""Restoration training augmentation: the same random patch, flip and 90-degree rotation
of every view of an image (input and target alike), on device, per image."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def random_patches(key, *views, size: int | None):
  """The same random ``size x size`` crop of every view (per image), or the views
  themselves when ``size`` is None or equals their H and W. Views share ``[B, H, W]``."""
  b, h, w = views[0].shape[:3]
  if any(v.shape[:3] != (b, h, w) for v in views):
    raise ValueError(f"views must share [B, H, W], got {[v.shape for v in views]}")
  if size is None or (h, w) == (size, size):
    return views
  if size > min(h, w):
    raise ValueError(f"patch {size} is larger than the {h}x{w} images")
  key_y, key_x = jax.random.split(key)
  ys = jax.random.randint(key_y, (b,), 0, h - size + 1)
  xs = jax.random.randint(key_x, (b,), 0, w - size + 1)

  def crop(view):
    one = lambda image, y, x: jax.lax.dynamic_slice(image, (y, x, 0),
                                                    (size, size, view.shape[-1]))
    return jax.vmap(one)(view, ys, xs)

  return tuple(crop(v) for v in views)


def random_flip_rot90(key, *views, flip: bool = True, rot90: bool = True):
  """Per image, the same random left-right flip (``flip``) and rotation by 0/90/180/270
  degrees (``rot90``; needs square images) of every view ``[B, S, S, C]``."""
  b, h, w = views[0].shape[:3]
  if rot90 and h != w:
    raise ValueError(f"90-degree rotations need square patches, got {h}x{w}")
  k_flip, k_quarter, k_half = jax.random.split(key, 3)
  bit = lambda k: jax.random.bernoulli(k, 0.5, (b,))[:, None, None, None]
  lr, quarter, half = bit(k_flip), bit(k_quarter), bit(k_half)

  def transform(x):
    if flip:
      x = jnp.where(lr, x[:, :, ::-1], x)
    if rot90:
      x = jnp.where(quarter, jnp.swapaxes(x, 1, 2)[:, ::-1], x)   # np.rot90: 90 degrees
      x = jnp.where(half, x[:, ::-1, ::-1], x)                     # + 180 degrees
    return x

  return tuple(transform(v) for v in views)
