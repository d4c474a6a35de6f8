"""Degradations from the image-restoration literature: denoise (AWGN), haze, rain, low
light, motion blur.

These have no reference implementation in the paper's code; they are simple,
documented synthetic models in the spirit of the restoration benchmarks (RESIDE-style
haze, additive streak rain, gamma/gain low light, linear motion kernels). Each works on float
images in 0..1 (``*_float``) and is wrapped for uint8 0..255 images by ``as_uint8``
(which rounds to nearest, so the clean level is an exact no-op), except denoise, whose
uint8 version adds the noise in float and truncates, as the denoising tables' test code.

Every function has the common signature ``f(key, images [B, H, W, 3], levels [B])``
with per-image levels; randomness (airlight, streak seeds, angles, sensor noise)
comes from ``key``. For a fixed key, raising the level degrades monotonically:
the random draws are shared across levels and the level only scales their effect.
"""

from __future__ import annotations

from typing import Callable

import jax
import dm_pix
import jax.numpy as jnp
import numpy as np

HAZE_GRID = np.round(np.arange(31) * 0.1, 1)  # beta 0, 0.1, ..., 3.0
RAIN_GRID = np.round(np.arange(11) * 0.005, 3)  # streak seed density 0, 0.005, ..., 0.05
LOWLIGHT_GRID = np.round(np.arange(19) * 0.05, 2)  # darkening factor 0, 0.05, ..., 0.9
MOTION_BLUR_GRID = np.arange(16).astype(np.float64)  # kernel length 0, 1, ..., 15 pixels
DENOISE_GRID = np.arange(56).astype(np.float64)  # noise sigma 0, 1, ..., 55 (0..255 units)

_RAIN_STREAK_LENGTH = 9.0  # pixels
_RAIN_BRIGHTNESS = (0.15, 0.4)  # a seed's light added, uniform, in 0..1 units
HAZE_NEAR = 0.3  # the nearest depth of the haze model (its floor)
HAZE_DEPTH_SLOPE = 0.7 / 320  # depth lost per pixel row (far 1.0 -> near 0.3 over 320 rows)
_MOTION_KERNEL_SIZE = 17  # odd, holds a centred segment of length 15 at any angle


def _per_image(levels: jax.Array) -> jax.Array:
  return jnp.asarray(levels, jnp.float32)[:, None, None, None]


def _line_kernels(angle: jax.Array, length: jax.Array, size: int) -> jax.Array:
  """Anti-aliased centred line segments: float32 ``[B, size, size]``, peak 1.

  angle: ``[B]`` radians from the vertical (0 = straight down the rows);
  length: ``[B]`` pixels. A cell's weight is ``max(0, 1 - distance to the segment)``,
  so length 0 gives a delta kernel.
  """
  offsets = jnp.arange(size, dtype=jnp.float32) - size // 2
  dy, dx = jnp.meshgrid(offsets, offsets, indexing="ij")
  dir_y, dir_x = jnp.cos(angle)[:, None, None], jnp.sin(angle)[:, None, None]
  half = (jnp.asarray(length, jnp.float32) / 2.0)[:, None, None]
  along = jnp.clip(dy * dir_y + dx * dir_x, -half, half)
  distance = jnp.hypot(dy - along * dir_y, dx - along * dir_x)
  return jnp.maximum(0.0, 1.0 - distance)


def _convolve_per_image(images: jax.Array, kernels: jax.Array, padding: str) -> jax.Array:
  """A true 2-D convolution of each image with its own kernel, applied to every channel.

  images: float ``[B, H, W, C]``; kernels: ``[B, K, K]`` with K odd (centred).
  padding: 'edge' (repeat the border, for blur) or 'zero'. Returns ``[B, H, W, C]``.

  A ``lax.scan`` over the K kernel rows; each step adds that row's K shifted copies of
  the padded images, weighted by each image's kernel entries: exact float32 products (a
  delta kernel returns the input bitwise) on every backend. The loop is also a fusion
  boundary, so a consumer of the result (rain's ``images + streaks``, after a flip
  of the images) does not recompute the K*K terms per element, as XLA:CPU did with the
  same sum unrolled. On three 192x192 tiles on XLA:CPU it is 5x faster than the
  per-image depthwise ``conv_general_dilated`` it replaced for rain's one-channel streak
  map and 8x for motion blur's three channels (``python -m fdjax.bench
  restoration_degradations``; BUILD_NOTES.md, "Degrading a training tile").
  """
  size = kernels.shape[-1]
  if size % 2 != 1:
    raise ValueError(f"kernels must have an odd size, got {kernels.shape}")
  pad_mode = {"edge": "edge", "zero": "constant"}.get(padding)
  if pad_mode is None:
    raise ValueError(f"padding must be 'edge' or 'zero', got {padding!r}")
  r = size // 2
  images, kernels = jnp.asarray(images), jnp.asarray(kernels)
  height, width = images.shape[1:3]
  padded = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode=pad_mode)
  flipped = kernels[:, ::-1, ::-1]   # out[y, x] = sum_ab k[a, b] image[y - a + r, x - b + r]

  def add_row(out, i):
    band = jax.lax.dynamic_slice_in_dim(padded, i, height, axis=1)   # [B, H, W + 2r, C]
    for j in range(size):
      out = out + flipped[:, i, j][:, None, None, None] * band[:, :, j:j + width]
    return out, None

  out, _ = jax.lax.scan(add_row, jnp.zeros_like(images), jnp.arange(size))
  return out


def haze_float(key: jax.Array, images: jax.Array, levels: jax.Array) -> jax.Array:
  """Atmospheric scattering ``I = J t + A (1 - t)``, ``t = exp(-beta d)``.

  The depth proxy d is a vertical ramp in PIXEL units: it starts at a depth d0 drawn per
  image, uniform in [0.3, 1.0], on the top row and falls by ``HAZE_DEPTH_SLOPE`` (0.7
  per 320 rows, a CBSD68 photo's height) per row, floored at 0.3 (near). A training
  patch therefore sees the haze of a window of a whole test image (the same local
  depth change), not the whole 1.0 -> 0.3 range squeezed into its own height.

  Args:
    key: draws the airlight A per image, uniform in [0.8, 1.0] (grey), and d0.
    images: float ``[B, H, W, C]`` in 0..1 (the clean scene J).
    levels: float ``[B]``, scattering coefficient beta, grid 0..3 step 0.1; 0 = clean.

  Returns:
    float32 ``[B, H, W, C]`` in 0..1.
  """
  images = jnp.asarray(images, jnp.float32)
  batch, height = images.shape[:2]
  airlight_key, depth_key = jax.random.split(key)
  top = jax.random.uniform(depth_key, (batch, 1, 1, 1), minval=HAZE_NEAR, maxval=1.0)
  rows = jnp.arange(height, dtype=jnp.float32)[None, :, None, None]
  depth = jnp.maximum(top - HAZE_DEPTH_SLOPE * rows, HAZE_NEAR)
  transmission = jnp.exp(-_per_image(levels) * depth)
  airlight = jax.random.uniform(airlight_key, (batch, 1, 1, 1), minval=0.8, maxval=1.0)
  return images * transmission + airlight * (1.0 - transmission)


def rain_float(key: jax.Array, images: jax.Array, levels: jax.Array) -> jax.Array:
  """Synthetic rain: sparse seeds smeared along a slanted line, added to the scene.

  The streaks add light, ``clip(J + s, 0, 1)``: in the real pairs (Rain12's training
  pairs, Rain100L's test pairs) a streak brightens a dark and a mid-grey background by
  the same amount. A screen blend ``J + (1 - J) s`` (fdjax before 2026-12-05) dims the
  streaks on bright backgrounds, and models trained on it removed half of Rain100L's
  rain (BUILD_NOTES.md, "Rain that adds light").

  Args:
    key: draws seed positions, per-seed brightness (0.15..0.4 of full scale) and one
      slant per image (uniform within +-22.5 degrees of vertical).
    images: float ``[B, H, W, C]`` in 0..1.
    levels: float ``[B]``, streak density: the fraction of pixels that start a streak
      (9 pixels long), grid 0..0.05 step 0.005; 0 = clean.

  Returns:
    float32 ``[B, H, W, C]`` in 0..1: ``clip(J + s, 0, 1)`` with s the streak map in 0..1.
  """
  images = jnp.asarray(images, jnp.float32)
  batch, height, width = images.shape[:3]
  seed_key, brightness_key, angle_key = jax.random.split(key, 3)
  # The same uniforms for every level: a higher density adds seeds, never moves them.
  seeds = jax.random.uniform(seed_key, (batch, height, width, 1)) < _per_image(levels)
  brightness = jax.random.uniform(brightness_key, (batch, height, width, 1),
                                  minval=_RAIN_BRIGHTNESS[0], maxval=_RAIN_BRIGHTNESS[1])
  angle = jax.random.uniform(angle_key, (batch,), minval=-np.pi / 8, maxval=np.pi / 8)
  size = int(_RAIN_STREAK_LENGTH) + 2
  kernels = _line_kernels(angle, jnp.full((batch,), _RAIN_STREAK_LENGTH), size)
  streaks = _convolve_per_image(seeds * brightness, kernels, padding="zero")
  streaks = jnp.clip(streaks, 0.0, 1.0)
  return jnp.clip(images + streaks, 0.0, 1.0)


def lowlight_float(key: jax.Array, images: jax.Array, levels: jax.Array) -> jax.Array:
  """Under-exposure: gain and gamma darken, then signal-dependent sensor noise.

  With darkening factor k: ``y = (1 - k) * J ** (1 + k)``, plus Gaussian noise of
  variance ``k * (0.01 * y + 0.0001)`` (shot + read noise), clipped to [0, 1].

  Args:
    key: draws the noise (one standard normal per value).
    images: float ``[B, H, W, C]`` in 0..1.
    levels: float ``[B]``, darkening factor k, grid 0..0.9 step 0.05; 0 = clean.

  Returns:
    float32 ``[B, H, W, C]`` in 0..1; mean brightness falls with k.
  """
  images = jnp.asarray(images, jnp.float32)
  k = _per_image(levels)
  dark = dm_pix.adjust_gamma(images, 1.0 + k, gain=1.0 - k)  # gain * images ** gamma
  # sqrt(k) apart: sqrt(k * v) has an infinite derivative at k = 0 (NaN gradients)
  noise_std = jnp.sqrt(k) * jnp.sqrt(0.01 * dark + 1e-4)
  noise = jax.random.normal(key, images.shape, jnp.float32)
  return jnp.clip(dark + noise_std * noise, 0.0, 1.0)


def motion_blur_float(key: jax.Array, images: jax.Array, levels: jax.Array) -> jax.Array:
  """Linear motion blur: a normalised line kernel of the given length.

  Args:
    key: draws the direction per image, uniform over [0, 180) degrees.
    images: float ``[B, H, W, C]`` (any range; the blur is linear).
    levels: float ``[B]``, the segment's length L in pixels, grid 0..15 step 1; 0 =
      clean. The segment is antialiased (``_line_kernels``), so the kernel spans about
      L + 1 pixels: L = 1 is [1/4, 1/2, 1/4] along the motion, L = 2 three equal taps.

  Returns:
    float32 ``[B, H, W, C]``; borders repeat the edge pixels.
  """
  images = jnp.asarray(images, jnp.float32)
  angle = jax.random.uniform(key, (images.shape[0],), minval=0.0, maxval=np.pi)
  kernels = _line_kernels(angle, jnp.asarray(levels, jnp.float32), _MOTION_KERNEL_SIZE)
  kernels = kernels / jnp.sum(kernels, axis=(1, 2), keepdims=True)
  return _convolve_per_image(images, kernels, padding="edge")


def denoise_float(key: jax.Array, images: jax.Array, levels: jax.Array) -> jax.Array:
  """Additive white Gaussian noise for the denoising tables, kept in float.

  Args:
    key: draws one standard normal per value.
    images: float ``[B, H, W, C]`` in 0..1.
    levels: float ``[B]``, noise sigma in 0..255 pixel units, grid 0..55 step 1 (blind
      training draws uniformly over it; the tables test 15, 25 and 50); 0 = clean.

  Returns:
    float32 ``[B, H, W, C]``: ``images + sigma / 255 * N(0, 1)``, clipped to 0..1.
  """
  images = jnp.asarray(images, jnp.float32)
  noise = jax.random.normal(key, images.shape, jnp.float32)
  return jnp.clip(images + _per_image(levels) / 255.0 * noise, 0.0, 1.0)


def denoise(key: jax.Array, images: jax.Array, levels: jax.Array) -> jax.Array:
  """uint8 0..255 images + sigma * N(0, 1) in float, then clipped to 0..255 and TRUNCATED
  to uint8: ``np.clip(clean + sigma * randn, 0, 255).astype(np.uint8)``, the test
  protocol of PromptIR's and AirNet's dataset code (the quantisation of our denoising
  tables; the truncation adds a mean of about -0.5, the noise std is about
  ``sqrt(sigma^2 + 1/12)`` away from the clipped ends). ``levels``: float ``[B]``,
  sigma in 0..255 units (grid 0..55); sigma 0 returns the images unchanged."""
  clean = jnp.asarray(images, jnp.float32)
  noise = jax.random.normal(key, clean.shape, jnp.float32)
  noisy = jnp.clip(clean + _per_image(levels) * noise, 0.0, 255.0)
  return jnp.floor(noisy).astype(jnp.uint8)


def as_uint8(float_fn: Callable) -> Callable:
  """Wraps ``f(key, float 0..1, levels)`` as ``f(key, uint8 0..255, levels) -> uint8``.

  Rounds to nearest (these models have no reference quirk to reproduce), so a
  degradation that returns its input at the clean level is an exact no-op.
  """

  def apply_uint8(key: jax.Array, images: jax.Array, levels: jax.Array) -> jax.Array:
    out = float_fn(key, images.astype(jnp.float32) / 255.0, levels)
    return jnp.round(jnp.clip(out, 0.0, 1.0) * 255.0).astype(jnp.uint8)

  apply_uint8.__name__ = float_fn.__name__.removesuffix("_float")
  apply_uint8.__doc__ = f"uint8 0..255 version of ``{float_fn.__name__}`` (rounded)."
  return apply_uint8


haze = as_uint8(haze_float)
rain = as_uint8(rain_float)
lowlight = as_uint8(lowlight_float)
motion_blur = as_uint8(motion_blur_float)
