"""Super-resolution inputs: MATLAB-style bicubic down-sampling and back, on device.

The low-resolution (LR) image of the super-resolution tables is MATLAB's
``imresize(hr, 1/s, 'bicubic')`` (antialiased: the cubic kernel stretched by ``s``)
of the high-resolution (HR) image cropped to a multiple of ``s``. fdjax's restorers
are same-size U-Nets, so, as SRCNN and VDSR do, the network's input is the LR image
brought back to HR size by ``imresize(lr, s, 'bicubic')``; it learns the residual.

Both resizes are written as MATLAB's ``imresize`` computes them (``contributions``):
output pixel ``i`` (1-based) sits at ``u = i / scale + 0.5 (1 - 1 / scale)`` in input
coordinates; its taps are the ``ceil(width) + 2`` input pixels from
``floor(u - width / 2)``, weighted by Keys' cubic (``a = -0.5``), stretched by ``1 /
scale`` when down-sampling (``width = 4 / scale``), normalised to sum 1; indices past
the border are mirrored (``symmetric`` padding). Each 1-D resize is a matrix ``[out,
in]`` (numpy, built once per shape), applied to the rows and then the columns (MATLAB's
order for equal scales) in float32 at full precision: jit- and vmap-safe, static shapes.
On uint8 images MATLAB rounds and clips to 0..255 after EACH 1-D pass (its result has
the input's class at every step), and so does ``sr``: between the passes too.

A side that is not a multiple of ``s`` is handled as ``imresize`` would (the LR side
is ``ceil(n / s)``) and the up-sampled image is cropped to the first ``n`` pixels, so
the output always has the input's shape; the benchmark protocol crops test images to
a multiple of ``s`` first (``data.crop_multiple``).

Level = the scale factor ``s`` (``SR_GRID``: 1, 2, 3, 4; 1 returns the images
unchanged). ``sr`` (uint8) rounds each pass of both resizes to uint8 (the LR image is
then the LR PNG of the tables); ``sr_float`` keeps everything in float.

How close to MATLAB: the kernel, the tap positions, the mirrored borders and the
per-pass rounding follow ``imresize`` (exact .5 ties rounded up, as MATLAB's uint8
conversion; float32 sums instead of float64: a value that lands within float32 rounding
of .5, not on it, may round the other way). Checked against a float64
numpy ``imresize`` written from MATLAB's algorithm (as the port
github.com/fatheral/matlab_imresize, which reproduces MATLAB's uint8 output exactly,
computes it), against PIL's ``BICUBIC`` resize (same kernel, antialiased) away from
the borders, where PIL renormalises a truncated kernel instead of mirroring, and
against the published bicubic x4 PSNR of Set5 (tests/test_sr_degradation.py).
Revision 2 (2026-12-06): before, ``sr`` rounded only after both passes of a resize,
which differed from MATLAB by up to 13 grey levels where a pass overshoots 0..255.
Revision 3 (2026-12-07): exact .5 ties went to even (``jnp.round``), where MATLAB rounds
them up: 0.9-1.9 % of Set5's pixels at x2 and 0.1-0.25 % at x4 differed by 1 or 2 levels
(Set5's bicubic PSNR moved by at most 0.0005 dB).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# MATLAB imresize's 1-D bicubic resize as a float64 [out, in] matrix: the one
# implementation, shared with NIQE (fdjax.eval.matlab_imresize).
from fdjax.eval.matlab_imresize import resize_matrix

SR_GRID = np.array([1.0, 2.0, 3.0, 4.0])  # scale factors; 1 = unchanged


def _apply(images: jax.Array, rows: np.ndarray, cols: np.ndarray,
           quantize: bool = False) -> jax.Array:
  """``rows @ image @ cols^T`` per image and channel: ``[B, H, W, C] -> [B, H', W', C]``;
  ``quantize``: each pass rounded to integers in 0..255, as MATLAB on uint8 images."""
  hi = jax.lax.Precision.HIGHEST
  step = _round_uint8_range if quantize else (lambda x: x)
  out = step(jnp.einsum("ih,bhwc->biwc", jnp.asarray(rows, jnp.float32), images, precision=hi))
  return step(jnp.einsum("jw,biwc->bijc", jnp.asarray(cols, jnp.float32), out, precision=hi))


def downsample(images: jax.Array, scale: int, quantize: bool = False) -> jax.Array:
  """float32 ``[B, ceil(H/s), ceil(W/s), C]``: ``imresize(images, 1/s, 'bicubic')``
  (``quantize``: of uint8 images, each pass rounded)."""
  h, w = images.shape[1:3]
  lh, lw = -(-h // scale), -(-w // scale)
  return _apply(jnp.asarray(images, jnp.float32), resize_matrix(h, lh, 1.0 / scale),
                resize_matrix(w, lw, 1.0 / scale), quantize)


def upsample(images: jax.Array, scale: int, size: tuple[int, int],
             quantize: bool = False) -> jax.Array:
  """float32 ``[B, *size, C]``: the first ``size`` pixels of ``imresize(images, s,
  'bicubic')`` (``quantize``: of uint8 images, each pass rounded)."""
  h, w = images.shape[1:3]
  return _apply(jnp.asarray(images, jnp.float32), resize_matrix(h, size[0], float(scale)),
                resize_matrix(w, size[1], float(scale)), quantize)


def _round_uint8_range(x: jax.Array) -> jax.Array:
  """MATLAB's conversion to uint8: clipped, then rounded to the nearest integer with
  exact .5 ties up (away from zero; ``jnp.round`` takes them to even). Ties are common:
  at x2 and x4 every tap weight is dyadic, and ~1 % of a photo's pixels land on .5."""
  return jnp.floor(jnp.clip(x, 0.0, 255.0) + 0.5)


def bicubic_down_up(images: jax.Array, scale: int, *, quantize: bool) -> jax.Array:
  """float32 ``[B, H, W, C]``: ``images`` (0..255) down-sampled by ``scale`` and back;
  ``quantize``: every pass of both resizes rounded to integers in 0..255 (uint8 images,
  as MATLAB computes them)."""
  if scale == 1:
    return jnp.asarray(images, jnp.float32)
  low = downsample(images, scale, quantize)
  return upsample(low, scale, images.shape[1:3], quantize)


def _per_scale(images: jax.Array, levels: jax.Array, quantize: bool) -> jax.Array:
  levels = jnp.asarray(levels, jnp.float32)
  out = jnp.asarray(images, jnp.float32)
  for scale in SR_GRID[1:]:
    chosen = (jnp.round(levels) == scale)[:, None, None, None]
    out = jnp.where(chosen, bicubic_down_up(images, int(scale), quantize=quantize), out)
  return out


def sr(key: jax.Array, images: jax.Array, levels: jax.Array) -> jax.Array:
  """uint8 ``[B, H, W, 3]``: each image down-sampled by its level ``s`` (``[B]``, a
  point of ``SR_GRID``) and back to ``H x W`` (module docstring); deterministic."""
  del key
  return _per_scale(images, levels, quantize=True).astype(jnp.uint8)


def sr_float(key: jax.Array, images: jax.Array, levels: jax.Array) -> jax.Array:
  """float32 ``[B, H, W, 3]`` from float images in 0..1, not quantised or clipped: the
  bicubic kernel overshoots 0..1 at sharp edges (-0.04..1.04 at x2 on a black-and-white
  image); ``fdjax.degradations.apply_float`` clips its output to 0..1."""
  del key
  return _per_scale(jnp.asarray(images, jnp.float32) * 255.0, levels, quantize=False) / 255.0
