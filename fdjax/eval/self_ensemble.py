"""Self-ensemble: a restorer's output averaged over flips and rotations of its input.

The "+" rows of the restoration papers (EDSR+, RCAN+): the input is transformed by
each of the 8 symmetries of the square (rotations by 0, 90, 180, 270 degrees, each
with and without a left-right flip), restored, transformed back and the outputs
averaged (``size`` 8, 8 forward passes). ``size`` 2 averages the input and its
left-right mirror image only. That keeps "up" where it was, which matters for
degradations with a direction that training kept (``fdjax.tasks.restoration_views``):
rain streaks within 22.5 degrees of vertical, haze thickening towards the top.
Turned by 90 degrees, such images are outside what the models saw. On the three-task
run, x8 costs every row 0.7-1.5 dB on Rain100L and x2 gains on every task (BUILD_NOTES.md,
"Self-ensemble at test time"). The published three-task tables (AirNet, PromptIR) use
neither. fdjax applies it at test time only (``config.eval.self_ensemble``;
``fdjax.apply --self_ensemble``), to every row alike; training and model selection on
validation stay single-pass.

``self_ensemble(predict, size)`` wraps any predictor ``(variables, images [B, H, W, C])
-> images [B, H, W, C']`` (float 0..255 for the restoration task): a network whose
output is equivariant to these symmetries gives the same images back.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax.numpy as jnp

from fdjax.errors import ConfigError

TRANSFORMS = 8
SIZES = {2: (0, 4), 8: tuple(range(TRANSFORMS))}   # size -> the transforms it averages
NOTES = {2: "x2 self-ensemble (the mean over each input and its left-right mirror image)",
         8: "x8 self-ensemble (the mean over the 8 flips and rotations of each input)"}


def transform(images, index: int):
  """``images`` ``[..., H, W, C]`` under symmetry ``index`` (0..7): rotated by ``index %
  4`` quarter turns counter-clockwise (``np.rot90``), then flipped left-right when
  ``index >= 4``. Index 0 is the identity."""
  out = jnp.rot90(images, index % 4, axes=(-3, -2))
  return jnp.flip(out, axis=-2) if index >= 4 else out


def untransform(images, index: int):
  """The inverse of ``transform(., index)``."""
  out = jnp.flip(images, axis=-2) if index >= 4 else images
  return jnp.rot90(out, -(index % 4), axes=(-3, -2))


def check_size(size) -> int:
  """``size`` as an int if it is 0 (none), 2 or 8; else ``ConfigError`` (a ValueError)."""
  if isinstance(size, bool) or size not in (0, *SIZES):
    raise ConfigError(f"self-ensemble size must be 0 (none), 2 (left-right flip) or 8 (all "
                     f"flips and rotations), got {size!r}")
  return int(size)


def configured(config) -> int:
  """The size ``config.eval.self_ensemble`` asks for (0 for a run saved before the field)."""
  return int(config.eval.get("self_ensemble", 0))


@functools.lru_cache(maxsize=64)
def self_ensemble(predict: Callable, size: int = 8) -> Callable:
  """``predict_n(variables, images)``: the mean over the transforms ``i`` of
  ``SIZES[size]`` of ``untransform(predict(variables, transform(images, i)), i)``,
  float32. Traceable (jit it like ``predict``); memoised per ``(predict, size)`` so one
  jitted predictor serves every call."""
  indices = SIZES[check_size(size)]

  def predict_n(variables, images):
    total = None
    for i in indices:
      out = untransform(predict(variables, transform(images, i)), i).astype(jnp.float32)
      total = out if total is None else total + out
    return total / len(indices)

  return predict_n
