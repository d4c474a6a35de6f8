"""Degradations at fixed keys for model selection, greedy soups and population fitness:
the same degraded validation images at every epoch and for every candidate, and a batch
split over several hosts kept split."""

from __future__ import annotations

import jax

from fdjax.study.context import RunContext


def keeping_sharding(degrade):
  """``degrade(key, images)`` jitted. Images split over the hosts of several processes
  come out split as they went in (the model that takes them next is jitted for that
  split, and with several processes jit refuses, rather than moves, a global array
  placed otherwise; plain jit left some degradations' output replicated); other images
  (a host batch of any size: EA-Adam's calibration) as jit places them."""
  plain = jax.jit(degrade)
  split = {}

  def run(key, images):
    if isinstance(images, jax.Array) and not images.is_fully_addressable:
      if images.sharding not in split:
        split[images.sharding] = jax.jit(degrade, out_shardings=images.sharding)
      return split[images.sharding](key, images)
    return plain(key, images)

  return run


def fixed_key_transform(ctx: RunContext, degrade):
  """``(batch_index, images) -> degraded images`` with keys fixed by ``eval.seed``
  (``keeping_sharding``)."""
  degrade = keeping_sharding(degrade)
  key = jax.random.PRNGKey(ctx.config.eval.seed)
  return lambda index, images: degrade(jax.random.fold_in(key, index), images)
