"""Additive white Gaussian noise (AWGN) and salt-and-pepper noise (SAPN).

Both follow imagedegrade 0.2.3 (``imagedegrade.np.noise`` / ``saltpepper``) as the
reference code calls them on 0..255 images, followed by its ``np.uint8(x.clip(0, 255))``:
clip, then *truncate* (not round) to uint8. Random numbers come from JAX keys, so
only the distributions, not the exact draws, match numpy's.

Random bits: ``key`` gives each image its own Threefry-2x32 key (``jax.random.bits``),
and each image's values are Threefry-2x32 (20 rounds, the generator behind
``jax.random``) of a flat per-image counter. Same generator and guarantees as
``jax.random.normal(key, images.shape)``, different draws; XLA:CPU vectorises the flat
counter far better than ``jax.random`` on an image-shaped array (AWGN 5.5x and SAPN 22x
faster, each as a whole, on 1,024 CIFAR-sized images on a 2-core CPU: BUILD_NOTES.md,
2026-12-07 midday).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

SALT = 255.0  # true salt: the top of the 0..255 range
# The reference calls saltpepper with its default intensity_range (0, 1) on 0..255
# images, so its "salt" pixels become 1, not 255 (PROTOCOL.md, known bug).
PAPER_SALT = 1.0

_ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)  # Threefry-2x32 rotation constants


def _per_image(levels: jax.Array, ndim: int) -> jax.Array:
  levels = jnp.asarray(levels, jnp.float32)
  return levels.reshape(levels.shape[:1] + (1,) * (ndim - 1))


def _threefry2x32(k0, k1, x0, x1):
  """Threefry-2x32 with 20 rounds (Salmon et al. 2011), bit-identical to jax.random's.

  uint32 arrays, broadcast against each other; returns the two output words.
  """
  rotl = lambda v, r: (v << jnp.uint32(r)) | (v >> jnp.uint32(32 - r))
  ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for i in range(20):
    x0 = x0 + x1
    x1 = rotl(x1, _ROTATIONS[i % 8]) ^ x0
    if i % 4 == 3:  # key injection every 4 rounds
      s = (i + 1) // 4
      x0 = x0 + ks[s % 3]
      x1 = x1 + ks[(s + 1) % 3] + jnp.uint32(s)
  return x0, x1


def _image_keys(key: jax.Array, batch: int) -> tuple[jax.Array, jax.Array]:
  """Two uint32 ``[batch, 1]`` key words per image, from ``jax.random.bits``."""
  keys = jax.random.bits(key, (batch, 2), jnp.uint32)
  return keys[:, :1], keys[:, 1:]


def random_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint32 ``shape`` (``[B, ...]``): independent uniform 32-bit words, one key per image.

  Image ``b`` gets the key ``jax.random.bits(key, (B, 2))[b]``; its value ``i`` (flat
  index) is the first output word of Threefry-2x32 on the counter ``(i, 0)``. One
  hash per value, fused into the consumer: no intermediate array is written.
  Jit-, vmap- and batch-sharding-safe (everything is per image).
  """
  batch, n = shape[0], math.prod(shape[1:])
  k0, k1 = _image_keys(key, batch)
  counter = jax.lax.broadcasted_iota(jnp.uint32, (batch, n), 1)
  word, _ = _threefry2x32(k0, k1, counter, jnp.zeros_like(counter))
  return word.reshape(shape)


def _standard_normal(bits: jax.Array) -> jax.Array:
  """float32 N(0, 1) from uint32 words, as ``jax.random.normal`` maps its bits.

  23 random mantissa bits give u uniform in (-1, 1); z = sqrt(2) * erfinv(u).
  """
  low = np.nextafter(np.float32(-1.0), np.float32(0.0))
  unit = jax.lax.bitcast_convert_type((bits >> 9) | jnp.uint32(0x3F800000), jnp.float32) - 1.0
  u = jnp.maximum(low, unit * (1.0 - low) + low)
  return np.float32(math.sqrt(2.0)) * jax.lax.erf_inv(u)


def _normal_halves(key: jax.Array, batch: int, n: int) -> tuple[jax.Array, jax.Array]:
  """float32 N(0, 1) ``[B, ceil(n / 2)]`` twice: both Threefry-2x32 output words of the
  counters ``(j, 0)``, for the first and the second half of each image's ``n`` values."""
  k0, k1 = _image_keys(key, batch)
  counter = jax.lax.broadcasted_iota(jnp.uint32, (batch, (n + 1) // 2), 1)
  first, second = _threefry2x32(k0, k1, counter, jnp.zeros_like(counter))
  return _standard_normal(first), _standard_normal(second)


def _add_noise(key: jax.Array, images: jax.Array, levels: jax.Array, pixel_max: float,
               quantise: bool) -> jax.Array:
  """clip(images + sigma z, 0, pixel_max) (then floor to uint8 if ``quantise``).

  Each half of an image's flat values is finished in ``[B, n / 2]`` next to its normals
  and the halves are concatenated: XLA:CPU vectorises erfinv there (not when it is
  fused into an image-shaped ``[..., C]`` loop) and writes no float noise.
  """
  shape = images.shape
  batch, n = shape[0], math.prod(shape[1:])
  x = jnp.asarray(images, jnp.float32).reshape(batch, n)
  sigma = _per_image(levels, 2) * (pixel_max / 255.0)

  def finish(values, normal):
    noisy = jnp.clip(values + sigma * normal[:, :values.shape[1]], 0.0, pixel_max)
    return jnp.floor(noisy).astype(jnp.uint8) if quantise else noisy

  half = (n + 1) // 2
  first, second = _normal_halves(key, batch, n)
  return jnp.concatenate([finish(x[:, :half], first), finish(x[:, half:], second)],
                         axis=1).reshape(shape)


def awgn_float(key: jax.Array, images: jax.Array, levels: jax.Array, *,
               pixel_max: float = 1.0) -> jax.Array:
  """images + normal(0, sigma) per pixel and channel, clipped to [0, pixel_max].

  Args:
    key: PRNG key; each image's noise comes from its own key split from it.
    images: float ``[B, H, W, C]`` in 0..pixel_max.
    levels: float ``[B]``, sigma in 0..255 units (grid 0, 1, ..., 50) whatever
      ``pixel_max`` is; sigma 0 returns the images unchanged.
    pixel_max: top of the pixel range (1.0 for 0..1 images, 255.0 for 0..255).

  Returns:
    float32 ``[B, H, W, C]`` in [0, pixel_max], not quantised (the noise: image b's
    normals from ``_normal_halves``, one Threefry stream per image).
  """
  return _add_noise(key, images, levels, pixel_max, quantise=False)


def awgn(key: jax.Array, images: jax.Array, levels: jax.Array) -> jax.Array:
  """AWGN on uint8 images, as ``np.uint8(noise(img, sigma).clip(0, 255))``.

  Args:
    key: PRNG key.
    images: uint8 ``[B, H, W, C]``, 0..255.
    levels: float ``[B]``, sigma in 0..255 units, grid 0..50 step 1. 0 is an exact no-op.

  Returns:
    uint8 ``[B, H, W, C]``: noisy values clipped to [0, 255] and truncated
    (so the output mean sits about 0.5 below the input mean where nothing clips);
    equal to ``floor(awgn_float(key, images, levels, pixel_max=255))``.
  """
  return _add_noise(key, images, levels, 255.0, quantise=True)


def _salt_pepper_masks(key: jax.Array, shape, levels: jax.Array):
  """(pepper, salt) bool masks over every value (pixel and channel), for density p.

  imagedegrade sets a value to 0 with probability p / 2, then, independently, to salt
  with probability p / 2 (overwriting). So a value ends as salt with probability p / 2,
  as pepper with (p / 2)(1 - p / 2), untouched otherwise. One 32-bit word u per value
  reproduces exactly that: salt if u < (p / 2) 2**32, else pepper if
  u < (p / 2 + (p / 2)(1 - p / 2)) 2**32. The masks are disjoint.
  """
  bits = random_bits(key, shape)
  half_p = _per_image(levels, len(shape)) / 2.0
  scale = np.float32(2.0**32)
  salt_below = jnp.clip(half_p * scale, 0.0, scale - 256.0).astype(jnp.uint32)
  hit_below = jnp.clip(half_p * (2.0 - half_p) * scale, 0.0, scale - 256.0).astype(jnp.uint32)
  salt = bits < salt_below
  return (bits < hit_below) & ~salt, salt


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
  with probability p / 2, as pepper with (p / 2)(1 - p / 2), untouched otherwise
  (drawn with one 32-bit word per value, see ``_salt_pepper_masks``).

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
