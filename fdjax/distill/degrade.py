"""Training-time degradation of a batch, on device: levels drawn per image uniformly
from each degradation's grid (the reference draws an integer grid index per image)."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from fdjax import degradations


def single(name: str):
  """``degrade(key, images uint8 [B,H,W,3]) -> uint8``: one degradation, random levels."""

  def degrade(key, images):
    k_level, k_apply = jax.random.split(key)
    levels = degradations.sample_levels(name, k_level, images.shape[0])
    return degradations.apply(name, k_apply, images, levels)

  return degrade


def combined(names: Sequence[str]):
  """Share i (the i-th of ``len(names)`` equal consecutive slices) gets degradation i.

  This is the reference's "combined degraded" batch: one 128-image share per
  degradation concatenated into one batch. The batch size must divide evenly.
  """
  names = tuple(names)

  def degrade(key, images):
    if images.shape[0] % len(names):
      raise ValueError(f"batch of {images.shape[0]} does not split into {len(names)} equal "
                       f"shares for degradations {names}")
    shares = jnp.split(images, len(names))
    keys = jax.random.split(key, len(names))
    return jnp.concatenate([single(n)(k, s) for n, k, s in zip(names, keys, shares)])

  return degrade
