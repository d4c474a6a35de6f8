"""The JPEG block transform, in libjpeg's integer arithmetic and in float32.

Holds what ``fdjax.degradations.jpeg`` runs on every 8x8 block: libjpeg's ``FIX()``,
the "islow" integer forward and inverse DCT (jfdctint.c / jidctint.c) as exact int32
matrices with their DESCALE shifts, the orthonormal float32 DCT-II, the plane <-> block
reshapes, the quantiser's division without integer division, and the block round trip
(level shift, DCT, quantise, dequantise, IDCT, range limit). Bit-exact with
libjpeg-turbo on the ``exact`` path.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _fix(x: float, bits: int) -> int:
  """libjpeg's FIX(): x in fixed point with ``bits`` fractional bits, rounded."""
  return int(x * (1 << bits) + 0.5)


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
