"""Additive white Gaussian noise (AWGN) and salt-and-pepper noise (SAPN).

Both follow imagedegrade 0.2.3 (``imagedegrade.np.noise`` / ``saltpepper``) as the
reference code calls them on 0..255 images, followed by its ``np.uint8(x.clip(0, 255))``:
clip, then *truncate* (not round) to uint8. Random numbers come from JAX keys, so
only the distributions, not the exact draws, match numpy's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SALT = 255.0  # true salt: the top of the 0..255 range
# The reference calls saltpepper with its default intensity_range (0, 1) on 0..255
# images, so its "salt" pixels become 1, not 255 (PROTOCOL.md, known bug).
PAPER_SALT = 1.0


def _per_image(levels: jax.Array, ndim: int) -> jax.Array:
  levels = jnp.asarray(levels, jnp.float32)
  return levels.reshape(levels.shape[:1] + (1,) * (ndim - 1))


def awgn_float(key: jax.Array, images: jax.Array, levels: jax.Array, *,
               pixel_max: float = 1.0) -> jax.Array:
  """images + normal(0, sigma) per pixel and channel, clipped to [0, pixel_max].

  Args:
    key: PRNG key; one draw for the whole batch.
    images: float ``[B, H, W, C]`` in 0..pixel_max.
    levels: float ``[B]``, sigma in 0..255 units (grid 0, 1, ..., 50) whatever
      ``pixel_max`` is; sigma 0 returns the images unchanged.
    pixel_max: top of the pixel range (1.0 for 0..1 images, 255.0 for 0..255).

  Returns:
    float32 ``[B, H, W, C]`` in [0, pixel_max], not quantised.
  """
  images = jnp.asarray(images, jnp.float32)
  sigma = _per_image(levels, images.ndim) * (pixel_max / 255.0)
  noise = jax.random.normal(key, images.shape, jnp.float32)
  return jnp.clip(images + sigma * noise, 0.0, pixel_max)


def awgn(key: jax.Array, images: jax.Array, levels: jax.Array) -> jax.Array:
  """AWGN on uint8 images, as ``np.uint8(noise(img, sigma).clip(0, 255))``.

  Args:
    key: PRNG key.
    images: uint8 ``[B, H, W, C]``, 0..255.
    levels: float ``[B]``, sigma in 0..255 units, grid 0..50 step 1. 0 is an exact no-op.

  Returns:
    uint8 ``[B, H, W, C]``: noisy values clipped to [0, 255] and truncated
    (so the output mean sits about 0.5 below the input mean where nothing clips).
  """
  noisy = awgn_float(key, images.astype(jnp.float32), levels, pixel_max=255.0)
  return jnp.floor(noisy).astype(jnp.uint8)


def _salt_pepper_masks(key: jax.Array, shape, levels: jax.Array):
  """Two independent Bernoulli(p / 2) masks over every value (pixel and channel)."""
  pepper_key, salt_key = jax.random.split(key)
  half_p = _per_image(levels, len(shape)) / 2.0
  pepper = jax.random.uniform(pepper_key, shape) < half_p
  salt = jax.random.uniform(salt_key, shape) < half_p
  return pepper, salt


def sapn_float(key: jax.Array, images: jax.Array, levels: jax.Array, *,
               salt_value: float = 1.0) -> jax.Array:
  """Salt-and-pepper noise on float images, same draws as ``sapn`` for the same key.

  Args:
    key: PRNG key.
    images: float ``[B, H, W, C]``.
    levels: float ``[B]``, density p in 0..0.25 (grid step 0.01).
    salt_value: value written by salt, in the images' units (1.0 for 0..1 images).

  Returns:
    float32 ``[B, H, W, C]``.
  """
  images = jnp.asarray(images, jnp.float32)
  pepper, salt = _salt_pepper_masks(key, images.shape, levels)
  return jnp.where(salt, jnp.float32(salt_value), jnp.where(pepper, 0.0, images))


def sapn(key: jax.Array, images: jax.Array, levels: jax.Array, *,
         salt_value: float = SALT) -> jax.Array:
  """Salt-and-pepper noise, in imagedegrade's order.

  Every value (pixel *and* channel independently) is first set to 0 with
  probability p / 2, then, with an independent draw, to ``salt_value`` with
  probability p / 2; the second step overwrites the first. So a value ends as salt
  with probability p / 2, as pepper with (p / 2)(1 - p / 2), untouched otherwise.

  Args:
    key: PRNG key.
    images: uint8 ``[B, H, W, C]``, 0..255.
    levels: float ``[B]``, density p in 0..0.25, grid step 0.01. 0 is an exact no-op.
    salt_value: 255 (true salt, default) or ``PAPER_SALT`` = 1 to reproduce the
      reference's intensity-range bug.

  Returns:
    uint8 ``[B, H, W, C]``.
  """
  pepper, salt = _salt_pepper_masks(key, images.shape, levels)
  salted = jnp.where(pepper, jnp.uint8(0), images)
  return jnp.where(salt, jnp.uint8(salt_value), salted)
