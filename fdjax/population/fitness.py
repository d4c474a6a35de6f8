"""Per-objective validation metrics of every member of a population (EA-Adam's fitness).

Objective k of a classification population is clean images (k = 0) or degradation
k-1 of the level plan (``fdjax.population.objectives``); a member's metric on it is
the task metric (accuracy 0..1) on the first ``max_examples`` validation images, with
the degradation applied at fixed keys (levels drawn over its grid, ``eval.seed``), so
the same weights always get the same fitness. The evolution minimises, so ``score``
returns the metric negated when higher is better.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import logging

from fdjax import data as data_lib
from fdjax.eval.metric import jit_clean, predictor, split_scores
from fdjax.study.fixed_keys import fixed_key_transform
from fdjax.trees import unstack_tree

_SAID: set = set()   # the (fitness_examples, validation size) notes already logged


def validation_subset(ctx, max_examples: int):
  """The validation split (its first ``max_examples`` images when > 0; the whole split,
  with a log line once a process, when ``max_examples`` exceeds it); a one-line
  ValueError when there is none."""
  split = ctx.dataset.validation
  if split is None or not len(split):
    raise ValueError("ea_adam needs a validation split for its fitness: set "
                     "data.validation_fraction > 0")
  if max_examples and max_examples < len(split):
    split = data_lib.take(split, np.arange(max_examples))
  elif max_examples > len(split) and (max_examples, len(split)) not in _SAID:
    _SAID.add((max_examples, len(split)))   # once, not for every stage that scores
    logging.info("ea_adam.fitness_examples=%d is more than the %d validation images: "
                 "scoring on all %d", max_examples, len(split), len(split))
  return split


def member_metrics(ctx, max_examples: int):
  """``metrics(stacked_variables) -> float64 [P, M]``: the task metric of member i on
  objective k (module docstring). The predictor and the fixed-key degradations are
  compiled once, when this is called, and reused by every call of ``metrics``."""
  split = validation_subset(ctx, max_examples)
  predict = jit_clean(predictor(ctx.task, ctx.model), ctx.mesh)
  transforms = [None] + [fixed_key_transform(ctx, ctx.plan.sampler(name))
                         for name in ctx.plan.names]
  metric = ctx.task.metric.name

  def metrics(stacked_variables) -> np.ndarray:
    count = jax.tree.leaves(stacked_variables)[0].shape[0]
    out = np.zeros((count, len(transforms)))
    for i in range(count):
      member = unstack_tree(stacked_variables, i)
      for k, transform in enumerate(transforms):
        out[i, k] = split_scores(ctx.task, predict, member, split,
                                 batch_size=ctx.config.eval_batch_size, mesh=ctx.mesh,
                                 transform=transform, metrics=(metric,))[metric]
    return out

  return metrics


def scorer(ctx, max_examples: int):
  """``score(stacked_variables) -> float64 [P, M]`` objective values to MINIMISE."""
  metrics = member_metrics(ctx, max_examples)
  return lambda stacked: -ctx.task.metric.signed(metrics(stacked))
