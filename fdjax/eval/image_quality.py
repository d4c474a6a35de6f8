"""Image-quality metrics of restoration: PSNR and SSIM per image, in JAX.

Images are ``[H, W, 3]`` or ``[B, H, W, 3]``, uint8 or float, pixel values in 0..255
(``data_range`` = 255 unless given). Every function returns one value per image
(``[]`` or ``[B]``, float32) and runs under jit and vmap::

    psnr(restored, clean)                              # RGB, whole image (denoising tables)
    psnr(restored, clean, y_channel=True)              # Y of BT.601 (deraining tables)
    psnr(restored, clean, y_channel=True, shave=4)     # x4 super-resolution convention
    ssim(restored, clean)                              # Gaussian window 11x11, sigma 1.5

Conventions, as the field's tables compute them:

* Y channel: ITU-R BT.601 "studio swing" luma of MATLAB's ``rgb2ycbcr``,
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` for R, G, B in 0..255 (Y in
  16..235), kept in float (not rounded to uint8, as BasicSR's ``to_y_channel``), with
  ``data_range`` 255.
* A greyscale reference on Y (``grey``: its file holds one channel, which fdjax reads
  as three equal ones) is scored on its grey values, as the MATLAB scripts behind the
  published tables score a one-channel image (``size(im, 3) == 1``: no ``rgb2ycbcr``),
  and the other image on its full-range luma ``(Y - 16) 255 / 219``, which is its grey
  value where its channels are equal too (a bicubic input). Without ``grey``, as in
  BasicSR, which reads such a file as three channels, it is scored on their Y, ``16 +
  219/255 grey``: 20 log10(255/219) = 1.32 dB higher PSNR on that image (Set14's
  ``img_003``: Set14's bicubic x4 mean 26.09 dB that way, 25.99 this way, published
  26.00). Only the file tells: an RGB file whose channels are equal (Set14's
  ``img_010``) is scored on Y, as MATLAB does.
* ``shave``: pixels dropped from every border before measuring (the super-resolution
  tables shave ``scale`` pixels).
* PSNR: ``10 log10(data_range^2 / MSE)`` over all pixels (and channels) of an image;
  identical images give ``inf``, as scikit-image does.
* SSIM (Wang et al. 2004): Gaussian window of 11 taps, sigma 1.5, K1 = 0.01, K2 = 0.03,
  population (not sample) covariances, the mean of the SSIM map over the valid
  positions (no padding) and over channels. This equals scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=255, channel_axis=-1)`` and MATLAB's ``ssim_index``. (``dm_pix.ssim``
  computes the same map, but its vmapped ``jnp.convolve`` took 0.10 s per 481x321 image
  on a 2-core CPU against 0.023 s for the 11 shifted sums per axis here: BUILD_NOTES.md,
  2026-12-07 midday.)

``psnr``, ``ssim`` and ``mse`` are jitted (the options are static), so eager calls are
fast and calls inside another jit are inlined; eager calls of ``psnr`` and ``ssim`` also
check that the images are on ``data_range``'s scale.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# ITU-R BT.601 luma for 0..255 RGB (MATLAB rgb2ycbcr): Y = offset + rgb . weights / 255.
BT601_WEIGHTS = (65.481, 128.553, 24.966)
BT601_OFFSET = 16.0

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
  """float64 ``[size]``: the normalised 1-D Gaussian of SSIM, centred."""
  t = np.arange(size) - (size - 1) / 2
  g = np.exp(-0.5 * (t / sigma) ** 2)
  return g / g.sum()


def _check(a, b, fn: str) -> None:
  if a.shape != b.shape:
    raise ValueError(f"{fn}: images must share a shape, got {a.shape} and {b.shape}")
  if a.ndim not in (3, 4):
    raise ValueError(f"{fn}: expected images [H, W, C] or [B, H, W, C], got shape {a.shape}")


def rgb_to_y(images) -> jnp.ndarray:
  """float32 ``[..., H, W, 1]``: BT.601 luma (16..235) of RGB ``[..., H, W, 3]`` 0..255."""
  images = jnp.asarray(images, jnp.float32)
  if images.shape[-1] != 3:
    raise ValueError(f"rgb_to_y: expected RGB images [..., 3], got shape {images.shape}")
  weights = jnp.asarray(BT601_WEIGHTS, jnp.float32) / 255.0
  return BT601_OFFSET + jnp.sum(images * weights, axis=-1, keepdims=True)


def prepare_pair(restored, reference, *, y_channel: bool = False, shave: int = 0,
                 grey=None) -> tuple[jnp.ndarray, jnp.ndarray]:
  """``(restored, reference)`` as the metrics see them (``prepare``'s), except that on
  the Y channel a ``grey`` reference (bool ``[]`` or ``[B]``: a one-channel file) is
  taken on its grey values and ``restored`` on its full-range luma ``(Y - 16) 255 /
  219`` (the module docstring)."""
  a, b = (prepare(x, y_channel=y_channel, shave=shave) for x in (restored, reference))
  if not y_channel or grey is None:
    return a, b
  grey = jnp.asarray(grey, bool)[..., None, None, None]
  grey_b = prepare(jnp.asarray(reference)[..., :1], shave=shave)
  # full-range luma; a pixel whose channels are equal is its grey value exactly (the
  # weights sum to 219, but not in float32 rounding: equal images would not read inf)
  rgb = prepare(restored, shave=shave)
  equal = (rgb[..., :1] == rgb[..., 1:2]) & (rgb[..., 1:2] == rgb[..., 2:])
  full_a = jnp.where(equal, rgb[..., :1], (a - BT601_OFFSET) * (255.0 / sum(BT601_WEIGHTS)))
  return jnp.where(grey, full_a, a), jnp.where(grey, grey_b, b)


def prepare(images, *, y_channel: bool = False, shave: int = 0) -> jnp.ndarray:
  """float32 images as the metrics see them: Y channel (if asked), ``shave`` border
  pixels dropped on every side. ``[..., H, W, C] -> [..., H - 2 shave, W - 2 shave, C']``."""
  images = jnp.asarray(images, jnp.float32)
  if y_channel:
    images = rgb_to_y(images)
  if shave < 0:
    raise ValueError(f"shave must be >= 0, got {shave}")
  if shave:
    h, w = images.shape[-3:-1]
    if h <= 2 * shave or w <= 2 * shave:
      raise ValueError(f"shave={shave} leaves nothing of a {h}x{w} image")
    images = images[..., shave:h - shave, shave:w - shave, :]
  return images


@functools.partial(jax.jit, static_argnames=("y_channel", "shave"))
def mse(a, b, grey=None, *, y_channel: bool = False, shave: int = 0) -> jnp.ndarray:
  """float32 ``[]`` or ``[B]``: mean squared error per image, in (0..255)^2 units; ``b``
  is the reference, ``grey`` as ``prepare_pair``'s."""
  a, b = jnp.asarray(a), jnp.asarray(b)
  _check(a, b, "mse")
  a, b = prepare_pair(a, b, y_channel=y_channel, shave=shave, grey=grey)
  diff = a - b
  return jnp.mean(diff * diff, axis=(-3, -2, -1))


def _check_range(a, b, fn: str, data_range: float, y_channel: bool) -> None:
  """ValueError for a ``data_range`` that cannot be the images' own: ``y_channel`` with
  one other than 255, and (images known, not traced) a float image within 0..1 measured
  at a data_range above 1.5, or values above 1.5 at one of 1.5 or less (PSNR 48 dB off,
  SSIM near 1, without a word)."""
  if y_channel and data_range != 255:
    raise ValueError(f"{fn}: y_channel=True needs data_range=255 (BT.601's offsets are "
                     f"on the 0..255 scale), got {data_range}; scale the images to 0..255")
  if any(isinstance(x, jax.core.Tracer) for x in (a, b)) or not np.size(a):
    return
  for x in (a, b):
    values = np.asarray(x)
    low, high = float(values.min()), float(values.max())
    if (data_range > 1.5 and np.issubdtype(values.dtype, np.floating)
        and low >= 0.0 and 0.0 < high <= 1.0):
      raise ValueError(f"{fn}: an image holds values in 0..1 and data_range is "
                       f"{data_range:g}: pass data_range=1.0 for 0..1 images, or scale them "
                       "to 0..255")
    if data_range <= 1.5 and high > 1.5:
      raise ValueError(f"{fn}: an image holds values up to {high:g} and data_range is "
                       f"{data_range:g}: pass data_range=255 for 0..255 images")


@functools.partial(jax.jit, static_argnames=("data_range", "y_channel", "shave"))
def _psnr(a, b, grey, *, data_range: float, y_channel: bool, shave: int) -> jnp.ndarray:
  err = mse(a, b, grey, y_channel=y_channel, shave=shave)
  return 10.0 * jnp.log10(jnp.float32(data_range) ** 2 / err)


def psnr(a, b, *, data_range: float = 255.0, y_channel: bool = False, shave: int = 0,
         grey=None) -> jnp.ndarray:
  """float32 ``[]`` or ``[B]``: PSNR in dB per image (``inf`` where the images are equal)
  of ``[..., H, W, C]`` images in 0..``data_range`` (255: uint8 scale); ``b`` is the
  reference (clean) image. ``y_channel`` converts with BT.601's offsets for 0..255
  images, so it needs ``data_range`` 255; ``grey`` (bool ``[]`` or ``[B]``, on Y only):
  which references were one-channel files, scored on their grey values (the module
  docstring).
  ValueError for images that are not on ``data_range``'s scale (checked when not
  traced: 0..1 floats at 255, values above 1.5 at 1)."""
  _check_range(a, b, "psnr", data_range, y_channel)
  return _psnr(a, b, grey, data_range=data_range, y_channel=y_channel, shave=shave)


def _filter(x, window: np.ndarray) -> jnp.ndarray:
  """Separable 'valid' filtering of ``[..., H, W, C]`` along H and W with ``window``."""
  k = len(window)
  h, w = x.shape[-3:-1]
  x = sum(float(window[i]) * x[..., i:h - k + 1 + i, :, :] for i in range(k))
  return sum(float(window[i]) * x[..., :, i:w - k + 1 + i, :] for i in range(k))


def ssim(a, b, *, data_range: float = 255.0, y_channel: bool = False, shave: int = 0,
         grey=None) -> jnp.ndarray:
  """float32 ``[]`` or ``[B]``: SSIM per image (see the module docstring) of ``[..., H, W,
  C]`` images in 0..``data_range`` (255: uint8 scale; ``y_channel`` needs 255, and the
  images are checked against the scale, as ``psnr``; ``grey`` as ``psnr``'s); images
  must be at least 11x11 after shaving."""
  _check_range(a, b, "ssim", data_range, y_channel)
  return _ssim(a, b, grey, data_range=data_range, y_channel=y_channel, shave=shave)


@functools.partial(jax.jit, static_argnames=("data_range", "y_channel", "shave"))
def _ssim(a, b, grey, *, data_range: float, y_channel: bool, shave: int) -> jnp.ndarray:
  a, b = jnp.asarray(a), jnp.asarray(b)
  _check(a, b, "ssim")
  a, b = prepare_pair(a, b, y_channel=y_channel, shave=shave, grey=grey)
  h, w = a.shape[-3:-1]
  if min(h, w) < SSIM_WINDOW:
    raise ValueError(f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, "
                     f"got {h}x{w}")
  # Variances as E[x^2] - E[x]^2 lose their digits in float32 where the image is bright
  # and flat (8e-6 of SSIM at 250-255 against scikit-image's float64): computed on each
  # image less its own mean (per channel), which leaves variances and the covariance alone.
  offset_a = jnp.mean(a, axis=(-3, -2), keepdims=True)
  offset_b = jnp.mean(b, axis=(-3, -2), keepdims=True)
  ca, cb = a - offset_a, b - offset_b
  # The five local statistics filtered as one stacked array: one small graph to compile.
  stats = _filter(jnp.stack([ca, cb, ca * ca, cb * cb, ca * cb]), gaussian_window())
  cmu_a, cmu_b, sq_a, sq_b, ab = stats
  var_a = sq_a - cmu_a * cmu_a
  var_b = sq_b - cmu_b * cmu_b
  cov = ab - cmu_a * cmu_b
  mu_a, mu_b = cmu_a + offset_a, cmu_b + offset_b
  c1 = (SSIM_K1 * data_range) ** 2
  c2 = (SSIM_K2 * data_range) ** 2
  ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
              / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)))
  return jnp.mean(ssim_map, axis=(-3, -2, -1))
