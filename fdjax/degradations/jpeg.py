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
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

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


def _fix(x: float, bits: int) -> int:
  """libjpeg's FIX(): x in fixed point with ``bits`` fractional bits, rounded."""
  return int(x * (1 << bits) + 0.5)


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
  """
  b, h, w = c.shape
  # Vertical: output row 2i uses 3*row i + row i-1, row 2i+1 uses 3*row i + row i+1.
  v = jnp.stack([3 * c + _shift(c, 1, -1), 3 * c + _shift(c, 1, 1)], 2).reshape(b, 2 * h, w)
  left, right = 3 * v + _shift(v, 2, -1), 3 * v + _shift(v, 2, 1)
  if exact:  # alternating +8 / +7 rounding bias, then /16
    left, right = (left + 8) >> 4, (right + 7) >> 4
  else:
    left, right = left / 16.0, right / 16.0
  return jnp.stack([left, right], -1).reshape(b, 2 * h, 2 * w)


# ---------------------------------------------------------------- integer DCT (islow)
_CB = 13  # CONST_BITS
_K = {k: _fix(v, _CB) for k, v in dict(
    c0298=0.298631336, c0390=0.390180644, c0541=0.541196100, c0765=0.765366865,
    c0899=0.899976223, c1175=1.175875602, c1501=1.501321110, c1847=1.847759065,
    c1961=1.961570560, c2053=2.053119869, c2562=2.562915447, c3072=3.072711026).items()}


def _odd_part(t0, t1, t2, t3):
  """Odd-frequency rotation shared by jfdctint.c and jidctint.c (LL&M, figure 8)."""
  k = _K
  z5 = (t0 + t1 + t2 + t3) * k["c1175"]
  z1, z2 = (t0 + t3) * -k["c0899"], (t1 + t2) * -k["c2562"]
  z3, z4 = (t0 + t2) * -k["c1961"] + z5, (t1 + t3) * -k["c0390"] + z5
  return (t0 * k["c0298"] + z1 + z3, t1 * k["c2053"] + z2 + z4,
          t2 * k["c3072"] + z2 + z3, t3 * k["c1501"] + z1 + z4)


def _fdct_pass(d, first_pass):
  """One pass of jpeg_fdct_islow before its DESCALE: 8 inputs -> 8 outputs."""
  t0, t1, t2, t3 = d[0] + d[7], d[1] + d[6], d[2] + d[5], d[3] + d[4]
  t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
  dc = 4 if first_pass else 1  # pass 1 shifts outputs 0, 4 left by PASS1_BITS (no DESCALE)
  z1 = (t12 + t13) * _K["c0541"]
  o7, o5, o3, o1 = _odd_part(d[3] - d[4], d[2] - d[5], d[1] - d[6], d[0] - d[7])
  return [(t10 + t11) * dc, o1, z1 + t13 * _K["c0765"], o3,
          (t10 - t11) * dc, o5, z1 - t12 * _K["c1847"], o7]


def _idct_pass(c):
  """One pass of jpeg_idct_islow before its DESCALE: 8 frequencies -> 8 samples."""
  z1 = (c[2] + c[6]) * _K["c0541"]
  t2, t3 = z1 - c[6] * _K["c1847"], z1 + c[2] * _K["c0765"]
  t0, t1 = (c[0] + c[4]) * (1 << _CB), (c[0] - c[4]) * (1 << _CB)
  t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
  o0, o1, o2, o3 = _odd_part(c[7], c[5], c[3], c[1])
  return [t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3]


# Each islow pass is an integer-linear map followed by a rounding right shift
# (DESCALE), so running the butterflies on unit vectors gives exact int32 matrices
# [out, in]; int32 wrap-around is a ring homomorphism, so a matmul reproduces the
# C code's 32-bit arithmetic bit for bit while keeping the XLA graph small.
_eye = list(np.eye(8, dtype=np.int64))
_FDCT1, _FDCT2 = (np.stack(_fdct_pass(_eye, p)).astype(np.int32) for p in (True, False))
_IDCT = np.stack(_idct_pass(_eye)).astype(np.int32)
# DESCALE amounts (PASS1_BITS = 2). Forward outputs 0 and 4 carry no CONST_BITS factor.
_EVEN04 = np.isin(np.arange(8), (0, 4))
_FDCT1_SHIFT, _FDCT2_SHIFT = np.where(_EVEN04, 0, _CB - 2), np.where(_EVEN04, 2, _CB + 2)


def _int_pass(m, shift, x, axis):
  """Apply int32 matrix m [8,8] along ``axis`` (-1 or -2) of x [...,8,8], then DESCALE."""
  shift = np.broadcast_to(np.asarray(shift, np.int32), (8,))
  shift = shift if axis == -1 else shift[:, None]
  y = jnp.einsum("ji,...i->...j" if axis == -1 else "ji,...ik->...jk", m, x)
  return (y + np.where(shift > 0, 1 << np.maximum(shift - 1, 0), 0)) >> shift


# ---------------------------------------------------------------- float DCT
_DCT = np.array([[math.sqrt((1 if k == 0 else 2) / 8) * math.cos((2 * n + 1) * k * math.pi / 16)
                  for n in range(8)] for k in range(8)], np.float32)  # orthonormal DCT-II


def _to_blocks(plane):
  """[B,h,w] (h, w multiples of 8) -> [B,h*w/64,8,8], blocks in raster order."""
  b, h, w = plane.shape
  return plane.reshape(b, h // 8, 8, w // 8, 8).transpose(0, 1, 3, 2, 4).reshape(b, -1, 8, 8)


def _from_blocks(blocks, h, w):
  """Inverse of _to_blocks."""
  b = blocks.shape[0]
  return blocks.reshape(b, h // 8, w // 8, 8, 8).transpose(0, 1, 3, 2, 4).reshape(b, h, w)


def _floor_divide(a, div):
  """``a // div`` for int32 0 <= a < 2**24 and 1 <= div < 2**12, without integer division.

  Vector integer division does not exist on CPUs (XLA emits one scalar divide per
  value, the slowest step of the codec): divide in float32, where both operands are
  exact, then correct the quotient by one where rounding moved it.
  """
  quotient = jnp.floor(a.astype(jnp.float32) / div.astype(jnp.float32)).astype(jnp.int32)
  remainder = a - quotient * div
  return jnp.where(remainder < 0, quotient - 1,
                   jnp.where(remainder >= div, quotient + 1, quotient))


def _block_roundtrip(blocks, table, exact, rnd):
  """Level shift, DCT, quantise, round, dequantise, IDCT.

  blocks: [B,N,8,8] samples 0..255; table: int32 [B,N,8,8] quantisation steps.
  Returns decoded samples [B,N,8,8], clipped to 0..255 (libjpeg's range limit).
  """
  x = blocks - 128
  if exact:
    # jfdctint.c: rows first, then columns; the result is 8x the orthonormal DCT.
    coef8 = _int_pass(_FDCT2, _FDCT2_SHIFT, _int_pass(_FDCT1, _FDCT1_SHIFT, x, -1), -2)
    div = table * 8  # jcdctmgr.c: divisors are qtable << 3 (islow output is 8x the DCT)
    level = jnp.sign(coef8) * _floor_divide(jnp.abs(coef8) + div // 2, div)
    # jidctint.c: columns first (PASS1_BITS=2), then rows (descale by 2+3+13).
    y = _int_pass(_IDCT, _CB + 5, _int_pass(_IDCT, _CB - 2, level * table, -2), -1)
  else:
    d, hi = jnp.asarray(_DCT), jax.lax.Precision.HIGHEST  # no TF32/bf16 passes on GPU/TPU
    coef = jnp.einsum("uh,...hw,vw->...uv", d, x, d, precision=hi)
    y = jnp.einsum("uh,...uv,vw->...hw", d, rnd(coef / table) * table, d, precision=hi)
  return jnp.clip(y + 128, 0, 255)


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
