"""MATLAB's ``imresize(image, scale)`` (bicubic, antialiased), in JAX.

The resize of MATLAB's Image Processing Toolbox, as the NIQE release and the
super-resolution literature use it (and as BasicSR's ``matlab_functions.imresize``
transcribes it):

* kernel: Keys' cubic with ``a = -0.5``;
* output pixel ``x`` (1-based) reads input coordinate ``u = x / scale + (1 - 1 / scale) / 2``;
* when shrinking (``scale < 1``) with antialiasing the kernel is stretched by ``1 / scale``
  (``scale * cubic(scale * d)``, support ``4 / scale`` pixels): a low-pass filter;
* each output pixel's weights are normalised to sum to 1;
* indices outside the image are mirrored ('symmetric': the edge pixel repeats);
* output size ``ceil(scale * size)`` per axis; height first, then width (separable).

The taps and weights are built in float64 NumPy once per static shape (trace time) and
applied as gathers and weighted sums, so the resize is jit-able and batched over leading
axes. Values are not rounded or clipped (units stay those of the input).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

CUBIC_SUPPORT = 4.0  # taps of the unstretched bicubic kernel


def cubic(x: np.ndarray) -> np.ndarray:
  """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``)."""
  ax = np.abs(x)
  ax2, ax3 = ax * ax, ax * ax * ax
  return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
          + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


@functools.lru_cache(maxsize=64)
def resize_taps(in_length: int, out_length: int, scale: float, antialiasing: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
  """``(indices int [out_length, taps], weights float64 [out_length, taps])``: output
  pixel ``i`` is ``sum_t weights[i, t] * input[indices[i, t]]`` (0-based indices, the
  mirrored ones folded back onto the image)."""
  width = CUBIC_SUPPORT / scale if (scale < 1 and antialiasing) else CUBIC_SUPPORT
  x = np.arange(1, out_length + 1, dtype=np.float64)
  u = x / scale + 0.5 * (1 - 1 / scale)
  left = np.floor(u - width / 2)
  taps = math.ceil(width) + 2
  indices = left[:, None] + np.arange(taps)[None, :]            # 1-based
  distance = u[:, None] - indices
  if scale < 1 and antialiasing:
    weights = scale * cubic(distance * scale)
  else:
    weights = cubic(distance)
  weights = weights / weights.sum(axis=1, keepdims=True)
  # 'symmetric' extension: ... 2 1 | 1 2 ... n | n n-1 ...
  mirror = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
  return mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)], weights


@functools.lru_cache(maxsize=256)
def resize_matrix(in_length: int, out_length: int, scale: float,
                  antialiasing: bool = True) -> np.ndarray:
  """float64 ``[out_length, in_length]``: ``resize_taps`` as a dense matrix (rows sum to
  1; cached per shape: do not modify the result)."""
  indices, weights = resize_taps(in_length, out_length, scale, antialiasing)
  matrix = np.zeros((out_length, in_length))
  np.add.at(matrix, (np.repeat(np.arange(out_length), indices.shape[1]), indices.ravel()),
            weights.ravel())
  return matrix


def _resize_axis(x: jnp.ndarray, axis: int, scale: float, antialiasing: bool) -> jnp.ndarray:
  """Resizes ``axis`` of float32 ``x``. Each output is its heaviest tap plus the weighted
  differences to it, so a constant region stays exactly constant in float32 (a plain
  weighted sum would leave ~1e-7 relative ripples, which NIQE's contrast normalisation
  turns into spurious coefficients in flat areas)."""
  n = x.shape[axis]
  indices, weights = resize_taps(n, math.ceil(n * scale), scale, antialiasing)
  anchor = indices[np.arange(len(indices)), np.argmax(weights, axis=1)]
  x = jnp.moveaxis(x, axis, -1)
  centre = x[..., anchor]                                        # [..., out]
  gathered = x[..., indices]                                     # [..., out, taps]
  # An einsum, not sum(w * (...), -1): on XLA:CPU (jax 0.10.2) that reduction plus
  # ``centre`` compiled wrong for inputs of 288+ rows (rows from ~227 on garbage).
  out = centre + jnp.einsum("...ot,ot->...o", gathered - centre[..., None],
                            jnp.asarray(weights, jnp.float32),
                            precision=jax.lax.Precision.HIGHEST)
  return jnp.moveaxis(out, -1, axis)


@functools.partial(jax.jit, static_argnames=("scale", "antialiasing"))
def imresize(images, scale: float, antialiasing: bool = True) -> jnp.ndarray:
  """float32 ``[..., ceil(scale H), ceil(scale W)]``: MATLAB ``imresize(images, scale)``
  (bicubic) of ``[..., H, W]`` images (one channel; put channels on a leading axis)."""
  images = jnp.asarray(images, jnp.float32)
  if images.ndim < 2:
    raise ValueError(f"imresize: expected images [..., H, W], got shape {images.shape}")
  if not scale > 0:
    raise ValueError(f"imresize: scale must be > 0, got {scale}")
  out = _resize_axis(images, images.ndim - 2, float(scale), antialiasing)
  return _resize_axis(out, images.ndim - 1, float(scale), antialiasing)
