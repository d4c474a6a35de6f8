"""A depthwise convolution written as shifted multiply-adds, for XLA:CPU's sake.

``DepthwiseConv(features, kernel_size)`` equals ``flax.linen.Conv(features, (k, k),
padding=k // 2, feature_group_count=features)`` on ``[B, H, W, features]`` inputs: the
same parameters (``kernel [k, k, 1, features]``, LeCun-normal; ``bias [features]``,
zero), the same initial values under the same key, and the same function and gradients
up to float rounding (its sums run in another order).

Forward: ``sum_{i, j} kernel[i, j] * x_padded[:, i:i + H, j:j + W]``, k*k slices of the
zero-padded input, each scaled per channel, which XLA fuses into one loop. Backward (a
``jax.custom_vjp``): the input's gradient is the same sum over the output's gradient
with the kernel flipped; the kernel's gradient is one sum over the batch and the pixels
per offset, one offset per iteration of a ``lax.scan``. XLA:CPU runs a grouped
convolution with one channel per group far slower, and autodiff of the forward sums
fuses the k*k kernel-gradient sums into one slow loop (measured in BUILD_NOTES.md,
"NAFNet's depthwise convolution"). Reverse mode only (``custom_vjp``: no ``jax.jvp``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype


def _offsets(k: int) -> list[tuple[int, int]]:
  return [(i, j) for i in range(k) for j in range(k)]


def _padded(x, k: int):
  r = k // 2
  return jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))


def _shifted_sum(x, kernel):
  """``sum_{i, j} x_padded[:, i:i + H, j:j + W] * kernel[i, j, 0]`` in ``x``'s dtype,
  multiplied and summed in float32 (or wider) as XLA's convolutions accumulate."""
  k, (h, w) = kernel.shape[0], x.shape[1:3]
  wide = jnp.promote_types(x.dtype, jnp.float32)
  padded, kernel = _padded(x, k).astype(wide), kernel.astype(wide)
  out = sum(padded[:, i:i + h, j:j + w, :] * kernel[i, j, 0] for i, j in _offsets(k))
  return out.astype(x.dtype)


@jax.custom_vjp
def _depthwise(x, kernel):
  return _shifted_sum(x, kernel)


def _depthwise_fwd(x, kernel):
  return _shifted_sum(x, kernel), (x, kernel)


def _depthwise_bwd(residuals, grad):
  x, kernel = residuals
  k, (b, h, w, c) = kernel.shape[0], x.shape
  # out[p] = sum_o x[p + o] kernel[o] (o the offset from the centre), so
  # d x[q] = sum_o grad[q - o] kernel[o]: the same sum with the kernel flipped.
  dx = _shifted_sum(grad, kernel[::-1, ::-1])
  padded = _padded(x, k)

  def offset_sum(carry, offset):   # d kernel[i, j] = sum over b, h, w of x_padded * grad
    window = jax.lax.dynamic_slice(padded, (0, offset[0], offset[1], 0), (b, h, w, c))
    return carry, jnp.sum(window * grad, axis=(0, 1, 2), dtype=jnp.float32)

  _, dk = jax.lax.scan(offset_sum, None, jnp.asarray(_offsets(k)))
  return dx.astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


_depthwise.defvjp(_depthwise_fwd, _depthwise_bwd)


def depthwise_conv(x, kernel, bias=None):
  """``x [B, H, W, C]`` convolved (cross-correlated, as ``lax.conv``) channel by channel
  with ``kernel [k, k, 1, C]`` (k odd), zero padding ``k // 2`` ('SAME'); plus ``bias
  [C]`` when given. Returns ``[B, H, W, C]`` in the promoted dtype of the inputs."""
  k = kernel.shape[0]
  if kernel.shape[:3] != (k, k, 1) or k % 2 == 0 or kernel.shape[3] != x.shape[-1]:
    raise ValueError(f"depthwise_conv needs an odd square kernel [k, k, 1, C] with C = the "
                     f"input's {x.shape[-1]} channels, got {kernel.shape}")
  out = _depthwise(*promote_dtype(x, kernel))
  return out if bias is None else out + bias


class DepthwiseConv(nn.Module):
  """``flax.linen.Conv(features, (k, k), padding=k // 2, feature_group_count=features,
  dtype=dtype)`` computed by ``depthwise_conv`` (module docstring)."""

  features: int
  kernel_size: int = 3
  dtype: Any = None
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, 1, self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    return depthwise_conv(x, kernel, bias)
