"""Baseline JPEG round trip (encode + decode) in jax.numpy.

Reproduces what PIL does for ``Image.save(buf, 'JPEG', quality=q)`` followed by
``Image.open(buf)``: libjpeg(-turbo) defaults, i.e. JFIF YCbCr, 4:2:0 chroma
subsampling, the standard IJG quantisation tables scaled by quality and forced to
baseline (entries <= 255), the "islow" integer DCT on both sides and the decoder's
"fancy" (triangular) chroma upsampling.

The ``'exact'`` path reproduces libjpeg's fixed-point arithmetic in int32 (colour
conversion, chroma resampling, islow DCT/IDCT, quantiser rounding) and is bit-exact with
PIL 13 / libjpeg-turbo 3.2 on CIFAR-10 and synthetic images at every quality
(``python -m fdjax.degradations.jpeg_parity``). ``'straight_through'`` and ``'smooth'``
get their gradients from a float32 version of the same pipeline (orthonormal DCT, no
fixed-point rounding). Everything is pure, jit/vmap safe and static-shaped, and quality
is a traced per-image value, so one compilation serves every quality.

The DCT, quantiser and 8x8 block helpers live in ``fdjax.degradations.jpeg_dct``; this
module holds the quantisation tables, colour conversion, chroma resampling, the codec
pipeline and the public ``jpeg`` / ``jpeg_float``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fdjax.degradations.jpeg_dct import _block_roundtrip, _fix, _from_blocks, _to_blocks

# Standard IJG tables (ITU-T T.81 Annex K), natural (row-major) order:
# row = vertical frequency, column = horizontal frequency.
_LUMA_BASE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], np.int32).reshape(8, 8)
_CHROMA_BASE = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
] + [99] * 32, np.int32).reshape(8, 8)

CLEAN_QUALITY = 101  # quality >= this returns the input unchanged


def quantization_tables(quality) -> tuple[jax.Array, jax.Array]:
  """Quality-scaled tables as written by libjpeg's ``jpeg_set_quality(q, TRUE)``.

  quality: float/int [B], rounded to the nearest integer and clamped to 1..100.
  Returns (luma, chroma) int32 [B,8,8] in natural order (as PIL's ``.quantization``).
  """
  q = jnp.clip(jnp.round(jnp.asarray(quality, jnp.float32)), 1, 100).astype(jnp.int32)
  # jpeg_quality_scaling: integer division for q < 50.
  scale = jnp.where(q < 50, 5000 // q, 200 - 2 * q)[:, None, None]
  # force_baseline=TRUE (PIL always passes it) clamps the entries to 8 bits.
  return tuple(jnp.clip((jnp.asarray(b) * scale + 50) // 100, 1, 255)
               for b in (_LUMA_BASE, _CHROMA_BASE))


# ---------------------------------------------------------------- colour conversion
_S16, _HALF16 = 16, 1 << 15  # jccolor.c / jdcolor.c use SCALEBITS = 16


def _rgb_to_ycc(rgb, exact):
  """[...,3] 0..255 -> (Y, Cb, Cr) [...] 0..255 (JFIF full range, +128 chroma offset)."""
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  if not exact:
    return (0.299 * r + 0.587 * g + 0.114 * b,
            -0.16874 * r - 0.33126 * g + 0.5 * b + 128.0,
            0.5 * r - 0.41869 * g - 0.08131 * b + 128.0)
  f = lambda c: _fix(c, _S16)
  # jccolor.c: chroma rounds with ONE_HALF-1 so that 255 can never round up to 256.
  off = (128 << _S16) + _HALF16 - 1
  y = (f(0.299) * r + f(0.587) * g + f(0.114) * b + _HALF16) >> _S16
  cb = (-f(0.16874) * r - f(0.33126) * g + f(0.5) * b + off) >> _S16
  cr = (f(0.5) * r - f(0.41869) * g - f(0.08131) * b + off) >> _S16
  return y, cb, cr


def _ycc_to_rgb(y, cb, cr, exact):
  """Inverse of the above (jdcolor.c tables); returns [...,3] clipped to 0..255."""
  cb, cr = cb - 128, cr - 128
  if exact:
    f = lambda c: _fix(c, _S16)
    r = y + ((f(1.402) * cr + _HALF16) >> _S16)
    g = y + ((-f(0.34414) * cb - f(0.71414) * cr + _HALF16) >> _S16)
    b = y + ((f(1.772) * cb + _HALF16) >> _S16)
  else:
    r, g, b = y + 1.402 * cr, y - 0.34414 * cb - 0.71414 * cr, y + 1.772 * cb
  return jnp.clip(jnp.stack([r, g, b], -1), 0, 255)


# ---------------------------------------------------------------- chroma resampling
def _downsample(c, exact):
  """h2v2 2x2 box average: [B,h,w] (h, w even) -> [B,h/2,w/2]."""
  s = c[:, 0::2, 0::2] + c[:, 0::2, 1::2] + c[:, 1::2, 0::2] + c[:, 1::2, 1::2]
  if not exact:
    return s / 4.0
  # jcsample.c h2v2_downsample: bias 1,2,1,2,... along each output row so that
  # the truncating >>2 is unbiased on average.
  bias = jnp.asarray(np.tile([1, 2], s.shape[-1] // 2 + 1)[: s.shape[-1]], s.dtype)
  return (s + bias) >> 2


def _shift(x, axis, step):
  """Neighbour along ``axis`` (step -1: previous, +1: next) with edge replication."""
  sl = lambda a, b: jax.lax.slice_in_dim(x, a, b, axis=axis)
  n = x.shape[axis]
  parts = [sl(0, 1), sl(0, n - 1)] if step < 0 else [sl(1, n), sl(n - 1, n)]
  return jnp.concatenate(parts, axis)


def _fancy_upsample(c, exact):
  """jdsample.c h2v2_fancy_upsample: [B,h,w] -> [B,2h,2w], triangular 3/4-1/4 filter.

  Edges replicate the last real sample (the decoder's context rows / end columns).
  libjpeg uses it only when the plane is more than 2 samples wide (``jinit_upsampler``:
  ``downsampled_width > 2``, i.e. images over 4 pixels wide); narrower planes are
  replicated 2x2 (``h2v2_upsample``).
  """
  b, h, w = c.shape
  if w <= 2:
    return jnp.repeat(jnp.repeat(c, 2, 1), 2, 2)
  # Vertical: output row 2i uses 3*row i + row i-1, row 2i+1 uses 3*row i + row i+1.
  v = jnp.stack([3 * c + _shift(c, 1, -1), 3 * c + _shift(c, 1, 1)], 2).reshape(b, 2 * h, w)
  left, right = 3 * v + _shift(v, 2, -1), 3 * v + _shift(v, 2, 1)
  if exact:  # alternating +8 / +7 rounding bias, then /16
    left, right = (left + 8) >> 4, (right + 7) >> 4
  else:
    left, right = left / 16.0, right / 16.0
  return jnp.stack([left, right], -1).reshape(b, 2 * h, 2 * w)


# ---------------------------------------------------------------- pipeline
def _codec(x, quality, exact, rnd):
  """Encode + decode. x: [B,H,W,3] int32 (exact) or float32, 0..255; quality [B]."""
  b, h, w, _ = x.shape
  hp, wp = -(-h // 16) * 16, -(-w // 16) * 16  # whole 16x16 MCUs
  ch, cw = -(-h // 2), -(-w // 2)  # downsampled_height / downsampled_width
  # libjpeg pads the right/bottom edges by replicating the last column/row.
  y, cb, cr = _rgb_to_ycc(jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)), "edge"), exact)
  # jcprepct.c pads the bottom of the *downsampled* chroma planes to the block height.
  cb, cr = (jnp.pad(_downsample(c, exact)[:, :ch], ((0, 0), (0, hp // 2 - ch), (0, 0)), "edge")
            for c in (cb, cr))
  # All blocks of all three planes go through one transform (one copy in the graph).
  ny, nc = hp * wp // 64, hp * wp // 256
  qy, qc = quantization_tables(quality)
  table = jnp.concatenate([jnp.broadcast_to(qy[:, None], (b, ny, 8, 8)),
                           jnp.broadcast_to(qc[:, None], (b, 2 * nc, 8, 8))], 1)
  blocks = _block_roundtrip(
      jnp.concatenate([_to_blocks(y), _to_blocks(cb), _to_blocks(cr)], 1), table, exact, rnd)

  def decode_chroma(chroma_blocks):
    # The decoder upsamples from the real samples only (edges replicated), then crops.
    plane = _from_blocks(chroma_blocks, hp // 2, wp // 2)[:, :ch, :cw]
    return _fancy_upsample(plane, exact)[:, :h, :w]

  y = _from_blocks(blocks[:, :ny], hp, wp)[:, :h, :w]
  return _ycc_to_rgb(y, decode_chroma(blocks[:, ny:ny + nc]), decode_chroma(blocks[:, ny + nc:]),
                     exact)


def _smooth_round(x):
  """Shin & Song (2017) differentiable rounding: round(x) + (x - round(x))**3.

  Within 0.125 of round(x); gradient 3 * (x - round(x))**2 (0 only at integers).
  """
  r = jax.lax.stop_gradient(jnp.round(x))
  return r + (x - r) ** 3


def _exact(images, quality):
  x = jnp.clip(jnp.round(images), 0, 255).astype(jnp.int32)  # what PIL is handed: uint8
  return _codec(x, quality, True, None).astype(jnp.float32)


@jax.custom_vjp
def _straight_through(images, quality):
  return _exact(images, quality)


def _st_fwd(images, quality):
  return _exact(images, quality), (images, quality)


def _st_bwd(res, g):
  images, quality = res
  # Float pipeline with every rounding replaced by the identity; only clips remain.
  _, vjp = jax.vjp(lambda x: _codec(x, quality, False, lambda v: v), images)
  return vjp(g)[0], jnp.zeros_like(quality)


_straight_through.defvjp(_st_fwd, _st_bwd)


def jpeg_float(images, quality, *, rounding: str = "exact") -> jax.Array:
  """JPEG-compress and decode a batch, each image at its own quality.

  images: float32 [B,H,W,3], RGB in 0..255 (need not be integer-valued).
  quality: float/int [B] in 1..101, rounded to the nearest integer; >= 101 returns the
    input unchanged (bitwise, and with identity gradient).
  rounding: 'exact' (libjpeg-exact, output integer-valued), 'straight_through' (same
    forward as 'exact', gradient of the float pipeline with identity roundings) or
    'smooth' (float pipeline, quantised DCT coefficients rounded with Shin & Song's
    cubic; other roundings dropped, so the output is not integer-valued; mean abs diff
    to 'exact' about 0.5-4 levels on CIFAR-10).
  Returns float32 [B,H,W,3] in 0..255.
  """
  images = jnp.asarray(images, jnp.float32)
  quality = jnp.round(jnp.broadcast_to(jnp.asarray(quality, jnp.float32), images.shape[:1]))
  if rounding == "exact":
    out = _exact(images, quality)
  elif rounding == "straight_through":
    out = _straight_through(images, quality)
  elif rounding == "smooth":
    out = _codec(images, quality, False, _smooth_round)
  else:
    raise ValueError(f"rounding must be exact, straight_through or smooth, got {rounding!r}")
  return jnp.where((quality >= CLEAN_QUALITY)[:, None, None, None], images, out)


def jpeg(key, images, levels) -> jax.Array:
  """Registry entry point. key: unused (JPEG is deterministic).

  images: uint8 [B,H,W,3] 0..255; levels: float [B] = JPEG quality 1..101 (101 = clean).
  Returns uint8 [B,H,W,3].
  """
  del key
  return jpeg_float(jnp.asarray(images, jnp.float32), levels).astype(jnp.uint8)
