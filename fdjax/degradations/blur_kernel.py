"""Gaussian kernels for ``fdjax.degradations.blur``, as scipy builds them, in fixed point.

Holds the blur's grid and kernel construction: ``TRUNCATE``, ``SIGMA_GRID`` and
``MAX_RADIUS``; scipy's radius ``int(3 * sigma + 0.5)`` and its normalised float64
half kernel (centre first); the split of weights into four float32 fixed-point
"digits" (15, 11, 11, 11 bits) that the convolution sums exactly; the per-grid-sigma
tables built once at import (digits, and the bitmask of values v on which scipy's
float64 loop returns v - 1 for a flat neighbourhood); the on-device snapping of sigmas
to the grid, their radii, the float32 half kernel ``half_kernel_float`` and its
conversion to digits summing to exactly 1 for sigmas off the grid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

TRUNCATE = 3.0  # the reference's ``truncate``: kernel radius int(3 * sigma + 0.5)
SIGMA_GRID = np.arange(51) / 10  # 0.0, 0.1, ..., 5.0 pixels, as randint(0, 50) / 10
MAX_RADIUS = int(TRUNCATE * SIGMA_GRID[-1] + 0.5)  # 15 -> fixed 31-tap kernels

# Fixed-point weights: 48 fractional bits as four float32 "digits" of these widths.
# With pair values <= 510 over 16 taps every digit sum stays below 2**24 (exact):
# top digit <= 255 * 2**15 (the weights sum to 1); others <= 255 * 2**11 + 15 * 510 * 2**11.
_DIGIT_BITS = (15, 11, 11, 11)
_FRACTION_BITS = sum(_DIGIT_BITS)  # 48: truncation moves a sum by < 2**-35 (<< 2**-32)


def _radius(sigma: float) -> int:
  return int(TRUNCATE * sigma + 0.5)


def _scipy_half_kernel(sigma: float) -> np.ndarray:
  """float64 ``[MAX_RADIUS + 1]``: scipy's normalised weights, centre first, zero-padded.

  Sigma 0 is a delta: scipy skips axes whose sigma is 0.
  """
  half = np.zeros(MAX_RADIUS + 1)
  if sigma <= 0:
    half[0] = 1.0
    return half
  radius = _radius(sigma)
  x = np.arange(-radius, radius + 1)
  phi = np.exp(-0.5 / (sigma * sigma) * x**2)  # scipy's _gaussian_kernel1d, order 0
  phi = phi / phi.sum()
  half[: radius + 1] = phi[radius:]
  return half


def _to_digits(weights: np.ndarray) -> np.ndarray:
  """float64 ``[..., n]`` in [0, 1] -> float32 ``[..., n, 4]`` fixed-point digits.

  ``w`` truncated to 48 fractional bits, ``floor(w * 2**48)``, split into 15, 11, 11
  and 11 bits, most significant first. 1.0 becomes ``[2**15, 0, 0, 0]``.
  """
  fixed = np.floor(np.asarray(weights, np.float64) * 2.0**_FRACTION_BITS).astype(np.int64)
  digits, low = [], _FRACTION_BITS
  for k, bits in enumerate(_DIGIT_BITS):
    low -= bits
    digit = fixed >> low
    digits.append(digit if k == 0 else digit & ((1 << bits) - 1))
  return np.stack(digits, -1).astype(np.float32)


def _flat_bits(flat: np.ndarray) -> np.ndarray:
  """int32 ``[..., 256]`` flat responses (v or v - 1) -> uint32 ``[..., 8]``: v - flat[v] bits."""
  drop = (np.arange(256) - flat).astype(np.uint64).reshape(*flat.shape[:-1], 8, 32)
  return (drop << np.arange(32, dtype=np.uint64)).sum(-1).astype(np.uint32)


def _constant_response(half: np.ndarray) -> np.ndarray:
  """int32 ``[256]``: scipy's uint8 output on a flat neighbourhood of each value.

  Replays scipy's symmetric correlate1d loop in float64 and its operation order
  (``x[0] * w[0]``, then ``(x[-j] + x[j]) * w[j]`` from the outermost tap inwards).
  """
  v = np.arange(256, dtype=np.float64)
  acc = v * half[0]
  for j in range(MAX_RADIUS, 0, -1):
    if half[j] != 0:
      acc = acc + (v + v) * half[j]
  return np.trunc(acc).astype(np.int32)


_GRID_HALF = np.stack([_scipy_half_kernel(s) for s in SIGMA_GRID])  # [51, 16] float64
_GRID_DIGITS = _to_digits(_GRID_HALF)  # [51, 16, 4] float32
_GRID_FLAT = np.stack([_constant_response(h) for h in _GRID_HALF])  # [51, 256] int32
assert set(np.unique(np.arange(256) - _GRID_FLAT)) <= {0, 1}  # scipy loses at most 1
_GRID_FLAT_BITS = _flat_bits(_GRID_FLAT)  # [51, 8] uint32: bit v set where flat v gives v - 1


def _snap(sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
  """float ``[B]`` -> (grid index int32 ``[B]``, on-grid bool ``[B]``)."""
  index = jnp.clip(jnp.round(sigma * 10.0), 0, len(SIGMA_GRID) - 1).astype(jnp.int32)
  on_grid = jnp.abs(sigma * 10.0 - index) < 1e-3
  return index, on_grid


def _radii(sigma: jax.Array, index: jax.Array, on_grid: jax.Array) -> jax.Array:
  """int32 ``[B]``: kernel radius ``int(3 * sigma + 0.5)``, clipped to 0..MAX_RADIUS;
  from the grid index on the grid, so float32 noise cannot move it."""
  radius = jnp.where(on_grid, (3 * index + 5) // 10,
                     jnp.floor(TRUNCATE * sigma + 0.5).astype(jnp.int32))
  return jnp.clip(radius, 0, MAX_RADIUS)


def half_kernel_float(sigma: jax.Array) -> jax.Array:
  """float ``[B]`` sigma in pixels -> float32 ``[B, MAX_RADIUS + 1]`` weights, centre first.

  Taps beyond each example's radius ``int(3 * sigma + 0.5)`` are zero; grid sigmas
  use the grid value k / 10 and an integer radius so float32 noise cannot move it.
  """
  sigma = jnp.asarray(sigma, jnp.float32)
  index, on_grid = _snap(sigma)
  radius = _radii(sigma, index, on_grid)
  sigma = jnp.where(on_grid, index.astype(jnp.float32) / 10.0, sigma)
  taps = jnp.arange(MAX_RADIUS + 1, dtype=jnp.float32)
  safe_sigma = jnp.maximum(sigma, 1e-6)[:, None]
  phi = jnp.exp(-0.5 * taps**2 / safe_sigma**2)
  phi = jnp.where(taps[None, :] <= radius[:, None], phi, 0.0)
  phi = jnp.where(sigma[:, None] > 0, phi, (taps == 0)[None, :].astype(jnp.float32))
  return phi / (phi[:, :1] + 2.0 * jnp.sum(phi[:, 1:], axis=1, keepdims=True))


def _float_to_digits(half: jax.Array) -> jax.Array:
  """float32 ``[B, 16]`` half kernel -> float32 ``[B, 16, 4]`` digits summing to exactly 1.

  The side taps are converted exactly (bits are peeled off); the centre tap is then
  set to 1 - 2 * sum(side taps) in fixed point, so a flat neighbourhood stays flat
  instead of depending on the float32 rounding of the weights' sum.
  """
  digits = []
  rest = half[:, 1:]
  for bits in _DIGIT_BITS:
    rest = rest * float(1 << bits)
    digit = jnp.floor(rest)
    digits.append(digit)
    rest = rest - digit
  side = jnp.stack(digits, -1).astype(jnp.int32)  # [B, 15, 4]
  centre = -2 * jnp.sum(side, axis=1)  # [B, 4], each |.| < 2**20
  centre = centre.at[:, 0].add(1 << _DIGIT_BITS[0])  # + 1.0
  for k in range(len(_DIGIT_BITS) - 1, 0, -1):  # borrow upwards; >> floors negatives
    borrow = centre[:, k] >> _DIGIT_BITS[k]
    mask = (1 << _DIGIT_BITS[k]) - 1
    centre = centre.at[:, k].set(centre[:, k] & mask).at[:, k - 1].add(borrow)
  return jnp.concatenate([centre[:, None, :], side], axis=1).astype(jnp.float32)
