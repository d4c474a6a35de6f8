"""The metric at every level of a degradation grid, and its mean over the grid.

FusionDistill (Daultani & Larochelle, WACV-W 2024) scores a model under one
degradation by its metric (top-1 accuracy) averaged over the whole grid of levels:
Acc(All). Which levels and which keys come from the study's ``LevelPlan``
(``fdjax.degradations.plan``); the task supplies the predictor and the metric.

Degradation happens on device inside the same jitted function as the forward pass,
with the level a traced ``float32 [B]`` so one compilation serves every level. The
key of a batch depends only on (seed, degradation, level index in the full grid,
batch index), so repeated evaluations give identical numbers and every method
evaluated with the same batch size sees the very same degraded images.

Results (``evaluate_all``)::

    {'clean': m, name: {'all': mean over levels, 'per_level': [[level, m], ...]}, ...,
     'avg': mean of the 'all' values}

with ``m`` the task's metric as stored (accuracy 0..1; reports scale it). Levels are
floats in the degradation's own units, kept as ``[level, value]`` pairs (never JSON
object keys).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdjax import data as data_lib
from fdjax import degradations
from fdjax.data.splits import balanced_subset
from fdjax.degradations.plan import LevelPlan, eval_key, level_indices, stride_levels
from fdjax.eval.metric import (Predict, eval_batches, jit_clean, jit_score, predictor,
                               split_metric)
from fdjax.train.mesh import data_sharding, replicated

# predict_fn(variables, images_uint8 [B,H,W,3], levels float32 [B], key) -> outputs
LevelPredict = Callable[..., jax.Array]

__all__ = ["LevelPredict", "Predict", "eval_key", "evaluate_all", "evaluate_levels",
           "level_indices", "mean_over_levels", "predictor", "stride_levels", "subset",
           "with_degradation"]


@functools.lru_cache(maxsize=64)
def with_degradation(predict: Predict, name: str, mesh=None) -> LevelPredict:
  """Wraps a clean ``predict(variables, images)`` into one jitted ``(variables,
  images_uint8 [B,H,W,3], levels float32 [B], key) -> outputs`` that applies
  ``degradations.apply(name, ...)`` on device first.

  ``predict`` may be any traceable predictor (one model, a stacked ensemble, a
  mixture-of-experts student). With ``mesh`` the batch and levels are split over
  ``data``; variables and key are replicated and the outputs gathered. Memoised on
  ``(predict, name, mesh)``: one compilation per predictor and degradation.
  """

  def degraded_predict(variables, images, levels, key):
    degraded = degradations.apply(name, key, images, jnp.asarray(levels, jnp.float32))
    return predict(variables, degraded)

  if mesh is None:
    return jax.jit(degraded_predict)
  return jax.jit(degraded_predict,
                 in_shardings=(replicated(mesh), data_sharding(mesh), data_sharding(mesh),
                               replicated(mesh)),
                 out_shardings=replicated(mesh))


SUBSET_SEED = 0  # fixed: every method and run evaluates the very same subset


def subset(split, max_examples: int | None):
  """At most ``max_examples`` examples of a split, spread evenly over classes (all when
  None): a seeded, class-balanced draw kept in split order, never a prefix (image-folder
  splits are sorted by class, so the first 1,000 CIFAR-10 test images are airplanes)."""
  if max_examples is None or max_examples >= len(split):
    return split
  idx = balanced_subset(np.asarray(split.labels), max_examples, SUBSET_SEED)
  return data_lib.take(split, idx)


def evaluate_levels(task, predict_fn: LevelPredict, variables, split, name: str,
                    levels: Sequence[tuple[float, int]], *, batch_size: int, mesh=None,
                    seed: int) -> list[list[float]]:
  """``[[level, metric], ...]`` of ``predict_fn`` on ``split`` degraded by ``name``.

  Args:
    task: supplies ``score(outputs, batch) -> (sum, count)``.
    predict_fn: ``(variables, images_uint8, levels float32 [B], key) -> outputs``
      applying the degradation itself (``with_degradation``).
    levels: ``(level, full_grid_index)`` pairs (``LevelPlan.eval_levels``); the index
      selects the fixed key ``eval_key(seed, name, index, batch_index)``.

  Each batch is read once and evaluated at every level; sums stay on device.
  """
  score = jit_score(task)
  sums = [0 for _ in levels]
  count = 0
  for batch_index, batch in enumerate(eval_batches(split, batch_size, mesh)):
    size = batch["image"].shape[0]
    for j, (level, index) in enumerate(levels):
      level_array = np.full((size,), level, np.float32)
      if mesh is not None:  # global, like the batch (jit refuses host arrays split over hosts)
        level_array = jax.device_put(level_array, data_sharding(mesh))
      outputs = predict_fn(variables, batch["image"], level_array,
                           eval_key(seed, name, index, batch_index))
      s, c = score(outputs, batch)
      sums[j] = sums[j] + s
    count = count + c
  n = max(float(count), 1.0)
  return [[float(level), float(s) / n] for (level, _), s in zip(levels, jax.device_get(sums))]


def mean_over_levels(per_level: Sequence[Sequence[float]]) -> float:
  """The plain mean of the per-level metric: Acc(All) for accuracy."""
  if not per_level:
    raise ValueError("mean over an empty level list")
  return float(np.mean([value for _, value in per_level]))


def evaluate_all(task, variables, split, plan: LevelPlan, *, batch_size: int, mesh=None,
                 model=None, predict: Predict | None = None,
                 max_examples: int | None = None) -> dict:
  """The clean metric and the mean over levels for each degradation of ``plan``.

  ``predict``: a traceable clean predictor ``(variables, images_uint8) -> outputs``
  (an ensemble, a mixture-of-experts student); default ``predictor(task, model)``.
  ``max_examples``: evaluate on a class-balanced subset (``subset``).
  """
  predict = predict or predictor(task, model)
  split = subset(split, max_examples)
  results: dict = {"clean": split_metric(task, jit_clean(predict, mesh), variables, split,
                                         batch_size=batch_size, mesh=mesh)}
  for name in plan.names:
    per_level = evaluate_levels(task, with_degradation(predict, name, mesh), variables, split,
                                name, plan.eval_levels(name), batch_size=batch_size,
                                mesh=mesh, seed=plan.eval_seed)
    results[name] = {"all": mean_over_levels(per_level), "per_level": per_level}
  results["avg"] = float(np.mean([results[n]["all"] for n in plan.names]))
  return results
