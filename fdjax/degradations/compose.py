"""Several degradations on the same images, applied in order."""

from __future__ import annotations

from typing import Sequence

import jax

from fdjax.degradations import registry
from fdjax.degradations.checks import check_images


def apply_sequence(key: jax.Array, images, steps: Sequence[tuple[str, object]]) -> jax.Array:
  """Applies ``[(name, levels), ...]`` in order, each step with its own key.

  Args:
    key: PRNG key, split into one key per step (``jax.random.split(key, len(steps))``).
    images: uint8 ``[B, H, W, 3]``, 0..255.
    steps: ``(name, levels)`` pairs; levels float ``[B]`` or a scalar, in that
      degradation's units. Each intermediate result is uint8, as if the images had
      been saved between steps (e.g. blur then JPEG, the usual camera order).

  Returns:
    uint8 ``[B, H, W, 3]``; the images unchanged for an empty sequence.
  """
  if not steps:
    return check_images(images, uint8=True)
  for step_key, (name, levels) in zip(jax.random.split(key, len(steps)), steps):
    images = registry.apply(name, step_key, images, levels)
  return images


def compose(*steps: tuple[str, object]):
  """``compose((name, levels), ...)`` -> ``f(key, images)`` running ``apply_sequence``."""

  def degrade(key: jax.Array, images) -> jax.Array:
    return apply_sequence(key, images, steps)

  return degrade
