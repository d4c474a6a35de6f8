"""Gaussian blur, bit-exact with the reference's scipy call on uint8 images.

The reference (imagedegrade 0.2.3 ``blur``, one image at a time) runs::

    scipy.ndimage.gaussian_filter(img_uint8, sigma=[s, s, 0], truncate=3.0, mode='nearest')

with ``s = randint(0, 50) / 10``. Three quirks of that call decide the output:

* scipy filters axis 0 (rows), writes the result into a *uint8* array, then filters
  axis 1 of that uint8 array: the image is truncated to integers twice.
* Its float64 -> uint8 cast is a C cast: truncation, not rounding (61.7 -> 61).
* On flat neighbourhoods the exact answer is an integer and float64 rounding noise
  decides the truncation (255 * sum(weights) can come out as 254.99999999999997 -> 254).

A float32 emulation gets about 99.2% of CIFAR-10 values right (max error 2). This
module therefore evaluates each 1-D pass in exact arithmetic: the float64 scipy weights
are truncated to 48-bit fixed point and split into four "digits" (15, 11, 11, 11 bits)
held as float32 integers; every product and partial sum stays below 2**24, so float32
adds them exactly, in any order, in vector registers. The exact sum's integer part is
scipy's answer whenever the sum is not within 2**-32 of an integer. For those
near-integer sums (flat or linear neighbourhoods) the answer is looked up in a table of
what scipy's float64 loop returns on a constant neighbourhood of that value. The result
matches scipy bit-for-bit on every grid sigma (checked on real CIFAR-10 images in the
tests).

Layout, for speed on CPU: images are filtered as ``[B, H, W * C]`` rows (a long,
contiguous minor axis that XLA vectorises), 'nearest' padding is a uint8 concatenation
converted to float32 once per pass, and each pass's result is written once (uint8)
before the next pass reads it at 31 offsets. Work follows each image's own radius
(sigma 0.1 needs 1 tap pair, sigma 5 needs 15): the batch is sorted by radius and cut
into up to 16 groups, each filtered by a ``lax.switch`` branch summing only the taps
its largest radius needs (rounded up to 3, 7, 11 or 15).

Sigmas off the 0.1 grid use float32 weights computed on device (same fixed-point
pipeline, centre tap set so the weights sum to exactly 1, no float64 table): there
the output is the exact-arithmetic truncation. It agrees with scipy (called with the
same float32 sigma) on 98-100% of CIFAR values, max error 2: off the grid scipy's
float64 noise on flat regions (which may give v - 1 for a flat v) is not reproduced.

``blur_float`` is the exact-float variant (no intermediate truncation). dm-pix's
``gaussian_blur`` is not used: its kernel support is a static ``kernel_size`` where
scipy's radius ``int(3 * sigma + 0.5)`` changes with each example's sigma, it pads
with zeros instead of repeating the edge, and sigma 0 gives NaN.

The kernels (scipy's weights, their fixed-point digits, the flat-neighbourhood tables,
the float32 kernels off the grid) are built in ``fdjax.degradations.blur_kernel``; this
module holds the padding, the exact 1-D passes, the radius grouping and the public
``blur`` / ``blur_float``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fdjax.degradations.blur_kernel import (MAX_RADIUS, SIGMA_GRID, TRUNCATE, _DIGIT_BITS,
                                            _GRID_DIGITS, _GRID_FLAT_BITS, _float_to_digits,
                                            _radii, _snap, half_kernel_float)

__all__ = ["BRANCH_RADII", "MAX_RADIUS", "SIGMA_GRID", "TRUNCATE", "blur", "blur_float",
           "half_kernel_float"]


def _shifted_pairs(x: jax.Array, axis: int):
  """Yields (j, x[i - j] + x[i + j]) for j = 15..1 with edge ('nearest') padding."""
  n = x.shape[axis]
  pad = [(0, 0)] * x.ndim
  pad[axis] = (MAX_RADIUS, MAX_RADIUS)
  padded = jnp.pad(x, pad, mode="edge")
  take = lambda start: jax.lax.slice_in_dim(padded, start, start + n, axis=axis)
  for j in range(MAX_RADIUS, 0, -1):  # scipy's order: outermost tap first
    yield j, take(MAX_RADIUS - j) + take(MAX_RADIUS + j)


def _pad_rows(x: jax.Array, pad: int) -> jax.Array:
  """``[B, H, M]`` -> ``[B, H + 2 pad, M]``, first / last row repeated ('nearest')."""
  batch, _, length = x.shape
  edge = lambda row: jnp.broadcast_to(row, (batch, pad, length))
  return jnp.concatenate([edge(x[:, :1]), x, edge(x[:, -1:])], axis=1)


def _pad_pixels(x: jax.Array, pad: int, channels: int) -> jax.Array:
  """``[B, H, W * C]`` -> ``[B, H, (W + 2 pad) * C]``, edge pixels repeated."""
  batch, height, _ = x.shape
  edge = lambda pixel: jnp.broadcast_to(
      pixel[:, :, None, :], (batch, height, pad, channels)).reshape(batch, height, pad * channels)
  return jnp.concatenate([edge(x[:, :, :channels]), x, edge(x[:, :, -channels:])], axis=2)


def _filter_rows(padded: jax.Array, rows: tuple[int, int], axis: int, unit: int, radius: int,
                 digits: jax.Array, flat_bits: jax.Array, use_flat: jax.Array) -> jax.Array:
  """One exact scipy pass over output ``rows`` of a padded uint8 ``[B, H', M']`` array.

  axis 1 filters along rows (``padded`` has MAX_RADIUS extra rows at each end), axis 2
  along pixels of ``unit`` values (MAX_RADIUS extra pixels at each end). Only taps
  ``0..radius`` (static) are summed: every example's weights beyond it must be zero.
  digits float32 ``[B, 16, 4]``; flat_bits uint32 ``[B, 8]``; use_flat bool ``[B]``
  (False off the grid: near-integer sums round to nearest). Returns uint8 ``[B, rows, M]``.
  """
  start, stop = rows
  if axis == 1:
    window = padded[:, start:stop + 2 * MAX_RADIUS]
    length = stop - start
  else:
    window = padded[:, start:stop]
    length = padded.shape[2] - 2 * MAX_RADIUS * unit
  window = window.astype(jnp.float32)
  take = lambda tap: jax.lax.slice_in_dim(window, tap * unit, tap * unit + length, axis=axis)
  col = lambda a: a.reshape(a.shape[:1] + (1, 1))
  centre = take(MAX_RADIUS)
  sums = [centre * col(digits[:, 0, k]) for k in range(len(_DIGIT_BITS))]
  for j in range(radius, 0, -1):  # pair <= 510, digit sums < 2**24: exact in float32
    pair = take(MAX_RADIUS - j) + take(MAX_RADIUS + j)
    sums = [s + pair * col(digits[:, j, k]) for k, s in enumerate(sums)]
  # Carry the digits into (integer part, 15 + 11 + 11 + 11 fraction bits).
  carry, rest = jnp.zeros(sums[0].shape, jnp.int32), [None] * len(sums)
  for k in range(len(sums) - 1, -1, -1):
    total = sums[k].astype(jnp.int32) + carry
    carry = total >> _DIGIT_BITS[k]
    rest[k] = total & ((1 << _DIGIT_BITS[k]) - 1)
  integer = carry
  top = rest[2] >> (_DIGIT_BITS[2] - 6)  # fraction bits 27..32
  near_below = (rest[0] == 0) & (rest[1] == 0) & (top == 0)  # fraction < 2**-32
  near_above = ((rest[0] == (1 << _DIGIT_BITS[0]) - 1) & (rest[1] == (1 << _DIGIT_BITS[1]) - 1)
                & (top == 63))  # fraction >= 1 - 2**-32
  nearest = jnp.clip(jnp.where(near_above, integer + 1, integer), 0, 255)
  # scipy on a flat neighbourhood of value v: v - bit v of the image's 256-bit mask.
  word_index, word = nearest >> 5, col(flat_bits[:, 7])
  for w in range(6, -1, -1):
    word = jnp.where(word_index == w, col(flat_bits[:, w]), word)
  from_table = nearest - ((word >> (nearest & 31).astype(jnp.uint32)) & 1).astype(jnp.int32)
  out = jnp.where(near_below | near_above, jnp.where(col(use_flat), from_table, nearest), integer)
  return jnp.clip(out, 0, 255).astype(jnp.uint8)


def _in_row_blocks(fn, height: int, blocks: int = 2) -> jax.Array:
  """``fn((start, stop))`` over row blocks, concatenated along axis 1.

  Only for speed: XLA:CPU then writes the pass's result once, instead of fusing the
  whole pass into the next step.
  """
  cuts = [height * i // blocks for i in range(blocks + 1)]
  parts = [fn((a, b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)


def _blur_group(x: jax.Array, radius: int, channels: int, digits: jax.Array,
                flat_bits: jax.Array, use_flat: jax.Array) -> jax.Array:
  """Both passes on uint8 ``[G, H, W * C]`` images whose radii are all <= ``radius``."""
  height = x.shape[1]
  args = (radius, digits, flat_bits, use_flat)
  padded = _pad_rows(x, MAX_RADIUS)  # scipy's axis 0 of [H, W, C] first
  x = _in_row_blocks(lambda rows: _filter_rows(padded, rows, 1, 1, *args), height)
  padded = _pad_pixels(x, MAX_RADIUS, channels)
  return _in_row_blocks(lambda rows: _filter_rows(padded, rows, 2, channels, *args), height)


# Kernel radii compiled as ``lax.switch`` branches (more branches: less wasted work,
# longer compiles; four took 1.7 s to compile on CPU, sixteen 4.4 s: BUILD_NOTES.md,
# "Degradations: throughput").
BRANCH_RADII = (3, 7, 11, MAX_RADIUS)


def _num_groups(batch: int) -> int:
  """Radius groups for a batch: up to 16, each of at least 32 images (1: no switch)."""
  return max(1, min(16, batch // 32))


def blur(key: jax.Array | None, images: jax.Array, levels: jax.Array) -> jax.Array:
  """Gaussian blur as the reference computes it.

  Args:
    key: unused (deterministic); kept for the common degradation signature.
    images: uint8 ``[B, H, W, C]``, 0..255.
    levels: float ``[B]``, sigma in pixels, 0..5 (grid step 0.1). 0 is an exact no-op.

  Returns:
    uint8 ``[B, H, W, C]``: rows filtered then truncated, columns filtered then
    truncated, 'nearest' edges, radius ``int(3 * sigma + 0.5)``.

  Cost follows each image's own radius, as in the per-image reference: the batch is
  sorted by radius and cut into equal groups (``_num_groups``); each group runs the
  ``lax.switch`` branch of the smallest radius in ``BRANCH_RADII`` that covers the
  group's largest (taps beyond an image's own radius have zero weight, so the output
  does not depend on the grouping). Batches under 64 images take the 15-tap path.
  """
  del key
  batch, height, width, channels = images.shape
  sigma = jnp.asarray(levels, jnp.float32)
  index, on_grid = _snap(sigma)
  digits = jnp.where(on_grid[:, None, None], jnp.asarray(_GRID_DIGITS)[index],
                     _float_to_digits(half_kernel_float(sigma)))
  flat_bits = jnp.asarray(_GRID_FLAT_BITS)[index]
  x = images.reshape(batch, height, width * channels)
  operands = (x, digits, flat_bits, on_grid)
  groups = _num_groups(batch)
  if groups == 1:
    out = _blur_group(x, MAX_RADIUS, channels, digits, flat_bits, on_grid)
    return out.reshape(batch, height, width, channels)
  radius = _radii(sigma, index, on_grid)
  size = -(-batch // groups)
  order = jnp.argsort(radius)

  def grouped(a):  # sorted by radius, padded with radius-0 rows, [groups, size, ...]
    a = a[order]
    a = jnp.concatenate([a, jnp.zeros((groups * size - batch,) + a.shape[1:], a.dtype)])
    return a.reshape((groups, size) + a.shape[1:])

  branches = [lambda args, r=r: _blur_group(args[0], r, channels, *args[1:])
              for r in BRANCH_RADII]
  # each group runs the smallest branch whose radius covers the group's largest
  branch = jnp.searchsorted(jnp.asarray(BRANCH_RADII), jnp.max(grouped(radius), axis=1))
  out = jax.lax.map(lambda a: jax.lax.switch(a[0], branches, a[1]),
                    (branch, tuple(grouped(a) for a in operands)))
  out = out.reshape((groups * size,) + out.shape[2:])[:batch][jnp.argsort(order)]
  return out.reshape(batch, height, width, channels)


def blur_float(key: jax.Array | None, images: jax.Array, levels: jax.Array) -> jax.Array:
  """Exact-float Gaussian blur (no intermediate rounding); any pixel range.

  Args:
    key: unused.
    images: float ``[B, H, W, C]`` (e.g. 0..1); computed in float32.
    levels: float ``[B]``, sigma in pixels (same kernel, radius and edges as ``blur``).

  Returns:
    float32 ``[B, H, W, C]``, equal to scipy's gaussian_filter on float input up to
    float32 rounding. Linear, so differentiable with respect to the images.
  """
  del key
  half = half_kernel_float(levels)
  x = jnp.asarray(images, jnp.float32)
  col = lambda a: a.reshape(a.shape[:1] + (1,) * (x.ndim - 1))
  for axis in (1, 2):
    acc = x * col(half[:, 0])
    for j, pair in _shifted_pairs(x, axis):
      acc = acc + pair * col(half[:, j])
    x = acc
  return x
