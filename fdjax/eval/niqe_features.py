"""NIQE's natural-scene-statistics features (Mittal, Soundararajan, Bovik 2013), in JAX.

Every function is pure, jit-able and batched over leading axes. Images here are one
channel (luma), float, pixel values in 0..255, ``[..., H, W]``.

* ``mscn``: mean-subtracted contrast-normalised coefficients
  ``(I - mu) / (sigma + 1)``, ``mu`` and ``sigma`` the local mean and standard deviation
  under the 7x7 Gaussian window of sigma 7/6 (MATLAB ``fspecial('gaussian', 7, 7/6)``),
  borders replicated (MATLAB ``imfilter(..., 'replicate')``, scipy ``mode='nearest'``).
* ``aggd_fit`` / ``ggd_fit``: moment-matching fits of the asymmetric / symmetric
  generalised Gaussian; the shape ``alpha`` is the point of the grid
  ``0.2, 0.201, ..., 10.0`` (MATLAB ``0.2:0.001:10``, 9801 values) whose moment ratio is
  nearest to the sample's.
* ``block_features``: the 36 features of every block at two scales, as the MATLAB
  release's ``computequality`` and BasicSR's ``niqe``: the image is cut into
  ``block x block`` blocks (96 by default, the remainder on the bottom and right dropped),
  18 features per block from the MSCN of the image and 18 from the MSCN of the image
  halved by MATLAB's bicubic ``imresize`` (blocks of ``block / 2``):
  ``[alpha, (beta_l + beta_r) / 2]`` of the AGGD fit to the MSCN coefficients, then for
  each of the four neighbour products (horizontal, vertical, main and anti diagonal,
  the block rolled by ``(0, 1), (1, 0), (1, 1), (1, -1)`` with wrap-around inside the
  block) ``[alpha, eta, beta_l, beta_r]``, ``eta = (beta_r - beta_l) G(2/alpha) / G(1/alpha)``.
  (The paper fits a GGD to the MSCN coefficients; the MATLAB release and BasicSR use the
  AGGD fit for these two features too, and so does fdjax.)
* the sharpness of a block (``block_statistics``' second output): the mean local
  standard deviation ``sigma`` of each full-scale block, by which the pristine model
  keeps only the sharp blocks of its images.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from fdjax.eval.matlab_imresize import imresize

WINDOW_SIZE = 7
WINDOW_SIGMA = 7.0 / 6.0
BLOCK = 96
NUM_FEATURES = 36
# The shape grid of the reference implementations (np.arange(0.2, 10.001, 0.001)).
SHAPE_GRID = np.arange(0.2, 10.001, 0.001)
gamma_fn = np.vectorize(math.gamma, otypes=[np.float64])
_R = 1.0 / SHAPE_GRID
# AGGD moment ratio G(2/a)^2 / (G(1/a) G(3/a)); GGD ratio G(1/a) G(3/a) / G(2/a)^2.
AGGD_RATIO = gamma_fn(2 * _R) ** 2 / (gamma_fn(_R) * gamma_fn(3 * _R))
GGD_RATIO = 1.0 / AGGD_RATIO
_SCALE = np.sqrt(gamma_fn(_R) / gamma_fn(3 * _R))     # beta = std * _SCALE[alpha]
_MEAN = gamma_fn(2 * _R) / gamma_fn(_R)                # eta = (beta_r - beta_l) * _MEAN
SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


def gaussian_window_1d(size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA) -> np.ndarray:
  """float64 ``[size]``: the normalised 1-D Gaussian; its outer product with itself is
  MATLAB's ``fspecial('gaussian', size, sigma)`` (which is separable)."""
  t = np.arange(size) - (size - 1) / 2
  g = np.exp(-0.5 * (t / sigma) ** 2)
  return g / g.sum()


def _centred_moments(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """``(m1, m2)``, each ``[..., H, W]``: the Gaussian-weighted first and second moments of
  ``x`` about each pixel's own value, over its 7x7 neighbourhood, borders replicated.
  Centring on the pixel makes a flat neighbourhood give exactly 0 in float32 (as the
  float64 references, whose output rounds to float32); the MSCN of flat areas is then
  exactly 0, which the AGGD fit counts on neither side."""
  window = np.outer(gaussian_window_1d(), gaussian_window_1d())
  r = WINDOW_SIZE // 2
  h, w = x.shape[-2:]
  pad = [(0, 0)] * (x.ndim - 2) + [(r, r), (r, r)]
  padded = jnp.pad(x, pad, mode="edge")
  m1 = m2 = 0.0
  for i in range(WINDOW_SIZE):
    for j in range(WINDOW_SIZE):
      d = padded[..., i:i + h, j:j + w] - x
      m1 = m1 + float(window[i, j]) * d
      m2 = m2 + float(window[i, j]) * d * d
  return m1, m2


def mscn(images) -> jnp.ndarray:
  """float32 ``[..., H, W]``: MSCN coefficients ``(I - mu) / (sigma + 1)`` of 0..255 images."""
  x = jnp.asarray(images, jnp.float32)
  m1, m2 = _centred_moments(x)
  return -m1 / (jnp.sqrt(jnp.abs(m2 - m1 * m1)) + 1.0)


def _nearest(table: np.ndarray, values: jnp.ndarray) -> jnp.ndarray:
  """int ``[...]``: index of the ``table`` entry nearest to each value (squared distance,
  first index on ties, as ``np.argmin``)."""
  t = jnp.asarray(table, jnp.float32)
  return jnp.argmin((t - values[..., None]) ** 2, axis=-1)


def _aggd(samples) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """``(grid index of alpha, left std, right std)`` of ``samples [..., n]``."""
  x = jnp.asarray(samples, jnp.float32)
  sq = x * x
  neg, pos = x < 0, x > 0
  left_std = jnp.sqrt(jnp.sum(jnp.where(neg, sq, 0), -1) / jnp.sum(neg, -1))
  right_std = jnp.sqrt(jnp.sum(jnp.where(pos, sq, 0), -1) / jnp.sum(pos, -1))
  g = left_std / right_std
  r_hat = jnp.mean(jnp.abs(x), -1) ** 2 / jnp.mean(sq, -1)
  r_norm = r_hat * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
  return _nearest(AGGD_RATIO, r_norm), left_std, right_std


def _table(table: np.ndarray, idx: jnp.ndarray) -> jnp.ndarray:
  return jnp.asarray(table, jnp.float32)[idx]


def aggd_fit(samples) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """``(alpha, beta_l, beta_r)``, each ``[...]``: the AGGD fitted to ``samples [..., n]``
  by moment matching (Lasmar et al. 2009, as in the NIQE release). ``beta_l``/``beta_r``
  are NaN when no sample is negative/positive."""
  idx, left_std, right_std = _aggd(samples)
  scale = _table(_SCALE, idx)
  return _table(SHAPE_GRID, idx), left_std * scale, right_std * scale


def ggd_fit(samples) -> tuple[jnp.ndarray, jnp.ndarray]:
  """``(alpha, sigma)``, each ``[...]``: the zero-mean GGD fitted to ``samples [..., n]``
  by moment matching (``E[x^2] / E[|x|]^2`` against the grid); ``sigma`` is the sample
  standard deviation ``sqrt(E[x^2])``, as in BRISQUE."""
  x = jnp.asarray(samples, jnp.float32)
  second = jnp.mean(x * x, -1)
  rho = second / jnp.mean(jnp.abs(x), -1) ** 2
  return _table(SHAPE_GRID, _nearest(GGD_RATIO, rho)), jnp.sqrt(second)


def _blocks(x: jnp.ndarray, size: int) -> jnp.ndarray:
  """``[..., H, W] -> [..., B, size, size]``, ``B = (H // size) (W // size)`` blocks, row
  by row; H and W are multiples of ``size``."""
  h, w = x.shape[-2:]
  lead = x.shape[:-2]
  x = x.reshape(lead + (h // size, size, w // size, size))
  x = jnp.moveaxis(x, -3, -2)
  return x.reshape(lead + ((h // size) * (w // size), size, size))


def _block_features(coefficients: jnp.ndarray) -> jnp.ndarray:
  """float32 ``[..., 18]``: the features of MSCN blocks ``[..., s, s]`` (module docstring).
  The five AGGD fits run as one (stacked on a leading axis): one grid search to compile."""
  samples = [coefficients] + [coefficients * jnp.roll(coefficients, shift, axis=(-2, -1))
                              for shift in SHIFTS]
  samples = jnp.stack(samples)
  idx, left_std, right_std = _aggd(samples.reshape(samples.shape[:-2] + (-1,)))
  alpha = _table(SHAPE_GRID, idx)
  beta_l, beta_r = left_std * _table(_SCALE, idx), right_std * _table(_SCALE, idx)
  eta = (beta_r - beta_l) * _table(_MEAN, idx)
  features = [alpha[0], (beta_l[0] + beta_r[0]) / 2]
  for k in range(1, 1 + len(SHIFTS)):
    features += [alpha[k], eta[k], beta_l[k], beta_r[k]]
  return jnp.stack(features, axis=-1)


def crop_to_blocks(images, block: int = BLOCK) -> jnp.ndarray:
  """``[..., H, W] -> [..., block (H // block), block (W // block)]``: the bottom and right
  remainders dropped (as the references); ``ValueError`` if no full block fits."""
  h, w = images.shape[-2:]
  if h < block or w < block:
    raise ValueError(f"NIQE needs images of at least {block}x{block} pixels, got {h}x{w}")
  if block % 2:
    raise ValueError(f"NIQE's block size must be even (halved at scale 2), got {block}")
  return images[..., :block * (h // block), :block * (w // block)]


@functools.partial(jax.jit, static_argnames=("block",))
def block_statistics(luma, block: int = BLOCK) -> tuple[jnp.ndarray, jnp.ndarray]:
  """``(features float32 [..., B, 36], sharpness float32 [..., B])`` of the blocks of
  ``[..., H, W]`` luma images in 0..255, ``B = (H // block) (W // block)`` row by row:
  the NIQE features (module docstring) and the mean local standard deviation (0..255
  units) of each full-scale block. One compiled program serves both."""
  image = crop_to_blocks(jnp.asarray(luma, jnp.float32), block)
  m1, m2 = _centred_moments(image)
  sigma = jnp.sqrt(jnp.abs(m2 - m1 * m1))
  sharpness = jnp.mean(_blocks(sigma, block), axis=(-2, -1))
  full = _block_features(_blocks(-m1 / (sigma + 1.0), block))
  half = imresize(image / 255.0, 0.5) * 255.0      # as the references: resized in 0..1
  half = _block_features(_blocks(mscn(half), block // 2))
  return jnp.concatenate([full, half], axis=-1), sharpness


def block_features(luma, block: int = BLOCK) -> jnp.ndarray:
  """float32 ``[..., B, 36]``: the NIQE features of every block (``block_statistics``)."""
  return block_statistics(luma, block=block)[0]
