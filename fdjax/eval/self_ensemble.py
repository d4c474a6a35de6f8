"""x8 self-ensemble: a restorer's output averaged over the 8 flips and rotations.

The "+" rows of the restoration papers (EDSR+, RCAN+): the input is transformed by
each of the 8 symmetries of the square (rotations by 0, 90, 180, 270 degrees, each
with and without a left-right flip), restored, transformed back and the 8 outputs
averaged. It costs 8 forward passes and typically adds 0.1-0.5 dB; the published
three-task tables (AirNet, PromptIR) are without it. fdjax applies it at test time
only (``config.eval.self_ensemble``; ``fdjax.apply --self_ensemble``), to every row
alike; training and model selection on validation stay single-pass.

``self_ensemble(predict)`` wraps any predictor ``(variables, images [B, H, W, C]) ->
images [B, H, W, C']`` (float 0..255 for the restoration task): a network whose output
is equivariant to these symmetries gives the same images back.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax.numpy as jnp

TRANSFORMS = 8


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


@functools.lru_cache(maxsize=64)
def self_ensemble(predict: Callable) -> Callable:
  """``predict8(variables, images)``: the mean over the 8 symmetries of
  ``untransform(predict(variables, transform(images, i)), i)``, float32. Traceable
  (jit it like ``predict``); memoised per ``predict`` so one jitted predictor serves
  every call."""

  def predict8(variables, images):
    total = None
    for i in range(TRANSFORMS):
      out = untransform(predict(variables, transform(images, i)), i).astype(jnp.float32)
      total = out if total is None else total + out
    return total / TRANSFORMS

  return predict8
