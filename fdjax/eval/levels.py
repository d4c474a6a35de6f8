"""The metric at every level of a degradation grid, and its mean over the grid.

FusionDistill (Daultani & Larochelle, WACV-W 2024) scores a model under one
degradation by its metric (top-1 accuracy) averaged over the whole grid of levels:
Acc(All). Which levels and which keys come from the study's ``LevelPlan``
(``fdjax.degradations.plan``); the task supplies the predictor and the metric.

Degradation happens on device inside the same jitted function as the forward pass,
with the level a traced ``float32 [B]`` and the degradation a traced index
(``with_degradations``), so one compilation serves every level and degradation. The
key of a batch depends only on (seed, degradation, level index in the full grid,
batch index), so repeated evaluations give identical numbers and every method
evaluated with the same batch size sees the very same degraded images.

Results (``evaluate_all``)::

    {'clean': m, name: {'all': mean over levels, 'per_level': [[level, m], ...]}, ...,
     'avg': mean of the 'all' values}

with ``m`` the task's headline metric as stored (accuracy 0..1; reports scale it).
Levels are floats in the degradation's own units, kept as ``[level, value]`` pairs
(never JSON object keys).

Per-degradation test sets (restoration, ``test_sets``: ``fdjax.data.testsets.TestSet``
of several image sizes, batched per size, batch indices running on over the groups):
each degradation is scored on its own set, synthetic (clean images degraded on device
at its evaluation levels) or real (the pairs' inputs as they are: ``per_level`` empty);
its entry then also holds ``'test_set'`` (the set's name) and ``'synthetic'`` (bool), and
``'scored'``: ``[n, N]`` when only the first n of its N images were scored.
A task with several metrics (``task.metrics``: PSNR, SSIM) adds ``'metrics': {name:
{'clean', <degradation>: {'all', 'per_level'}, 'avg'}}`` for every metric but the
headline; one evaluation pass computes them all (``task.scores``).

A task that scores degradations differently (optional hooks, restoration:
``for_degradation(name)`` = the task scoring that degradation's images, e.g. on the Y
channel; ``scoring_labels(names)`` = how each column is scored) adds ``'scoring':
{'clean': 'RGB', <degradation>: 'Y', ...}`` (absent when every column is plain RGB).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdjax import data as data_lib
from fdjax import degradations
from fdjax.data.sampling import balanced_subset
from fdjax.data.testsets import TestSet
from fdjax.degradations.plan import LevelPlan, eval_key, level_indices, stride_levels
from fdjax.eval.metric import (Predict, batch_scorer, jit_clean, mean_scores, on_devices,
                               predictor, split_scores, test_batches)
from fdjax.eval.per_image import per_set_means
from fdjax.train.mesh import data_sharding, place, replicated

# predict_fn(variables, images_uint8 [B,H,W,3], levels float32 [B], key) -> outputs
LevelPredict = Callable[..., jax.Array]

__all__ = ["LevelPredict", "Predict", "eval_key", "evaluate_all", "evaluate_levels",
           "level_indices", "mean_over_levels", "predictor", "stride_levels", "subset",
           "with_degradation", "with_degradations"]


@functools.lru_cache(maxsize=64)
def with_degradations(predict: Predict, names: tuple[str, ...], mesh=None):
  """Wraps a clean ``predict(variables, images)`` into ONE jitted ``(variables,
  images_uint8 [B,H,W,3], levels float32 [B], key, index int32 []) -> outputs`` that
  applies ``degradations.apply(names[index], ...)`` on device first: the index is traced
  (``lax.switch``; only the chosen branch runs), so a predictor compiles once for every
  degradation of a study instead of once per degradation.

  ``predict`` may be any traceable predictor (one model, a stacked ensemble, a
  mixture-of-experts student). With ``mesh`` the batch and levels are split over
  ``data``; variables, key and index are replicated and the outputs gathered. Memoised
  on ``(predict, names, mesh)``.
  """
  names = tuple(names)

  def degraded_predict(variables, images, levels, key, index):
    levels = jnp.asarray(levels, jnp.float32)
    branches = [functools.partial(degradations.apply, n) for n in names]
    degraded = jax.lax.switch(index, branches, key, images, levels)
    return predict(variables, degraded)

  if mesh is None:
    return jax.jit(degraded_predict)
  return jax.jit(degraded_predict,
                 in_shardings=(replicated(mesh), data_sharding(mesh), data_sharding(mesh),
                               replicated(mesh), replicated(mesh)),
                 out_shardings=replicated(mesh))


def with_degradation(predict: Predict, name: str, mesh=None, names=None) -> LevelPredict:
  """``(variables, images_uint8 [B,H,W,3], levels float32 [B], key) -> outputs``: the
  clean ``predict`` after ``degradations.apply(name, ...)`` on device, through
  ``with_degradations(predict, names, mesh)`` (``names`` default ``(name,)``; pass the
  study's names to share its one compilation)."""
  names = tuple(names or (name,))
  switched = with_degradations(predict, names, mesh)
  index = jnp.asarray(names.index(name), jnp.int32)
  return lambda variables, images, levels, key: switched(variables, images, levels, key, index)


SUBSET_SEED = 0  # fixed: every method and run evaluates the very same subset


def subset(split, max_examples: int | None):
  """At most ``max_examples`` examples of a split, spread evenly over classes (all when
  None): a seeded, class-balanced draw kept in split order, never a prefix (image-folder
  splits are sorted by class, so the first 1,000 CIFAR-10 test images are airplanes).
  A ``TestSet`` (no classes) keeps its first ``max_examples`` images."""
  if max_examples is None or max_examples >= len(split):
    return split
  if isinstance(split, TestSet):
    return split.first(max_examples)
  idx = balanced_subset(np.asarray(split.labels), max_examples, SUBSET_SEED)
  return data_lib.take(split, idx)


def scores_at_levels(task, predict_fn: LevelPredict, variables, split, name: str,
                     levels: Sequence[tuple[float, int]], *, batch_size: int, mesh=None,
                     seed: int, collect: dict | None = None) -> dict[str, list[list[float]]]:
  """``{metric: [[level, value], ...]}`` for every metric of ``task.scores``: what
  ``evaluate_levels`` computes, for all metrics at once. ``collect``: a dict that
  receives ``{metric: {level position j: [value per image, in split order]}}`` (a task
  with ``per_image``)."""
  score = batch_scorer(task, collect)
  variables = on_devices(variables, mesh)
  sums: dict = {}
  count = 0
  placed: dict = {}   # (batch size, level position) -> the level array, placed once

  def level_array(size: int, j: int):
    if (size, j) not in placed:
      array = np.full((size,), levels[j][0], np.float32)
      if mesh is not None:  # global, like the batch (jit refuses host arrays split over
        # hosts); placed once per batch size and level, not per batch
        array = place(array, data_sharding(mesh), copy=False)
      placed[size, j] = array
    return placed[size, j]

  for batch_index, batch in test_batches(split, batch_size, mesh):
    size = batch["image"].shape[0]
    for j, (level, index) in enumerate(levels):
      outputs = predict_fn(variables, batch["image"], level_array(size, j),
                           eval_key(seed, name, index, batch_index))
      for metric, (s, c) in score(outputs, batch, j).items():
        acc = sums.setdefault(metric, [0] * len(levels))
        acc[j] = acc[j] + s
    count = count + c
  return {metric: [[float(level), v] for (level, _), v in zip(levels, values)]
          for metric, values in mean_scores(sums, count).items()}


def evaluate_levels(task, predict_fn: LevelPredict, variables, split, name: str,
                    levels: Sequence[tuple[float, int]], *, batch_size: int, mesh=None,
                    seed: int) -> list[list[float]]:
  """``[[level, metric], ...]`` of ``predict_fn`` on ``split`` degraded by ``name``.

  Args:
    task: supplies ``scores(outputs, batch) -> {metric: (sum, count)}``; the headline
      metric ``task.metric`` is returned.
    predict_fn: ``(variables, images_uint8, levels float32 [B], key) -> outputs``
      applying the degradation itself (``with_degradation``).
    split: an ``ImageSet`` or a ``TestSet`` (groups of one image size each).
    levels: ``(level, full_grid_index)`` pairs (``LevelPlan.eval_levels``); the index
      selects the fixed key ``eval_key(seed, name, index, batch_index)``.

  Each batch is read once and evaluated at every level; sums stay on device.
  """
  return scores_at_levels(task, predict_fn, variables, split, name, levels,
                          batch_size=batch_size, mesh=mesh, seed=seed)[task.metric.name]


def mean_over_levels(per_level: Sequence[Sequence[float]]) -> float:
  """The plain mean of the per-level metric: Acc(All) for accuracy."""
  if not per_level:
    raise ValueError("mean over an empty level list")
  return float(np.mean([value for _, value in per_level]))


def evaluate_all(task, variables, split, plan: LevelPlan, *, batch_size: int, mesh=None,
                 model=None, predict: Predict | None = None,
                 max_examples: int | None = None, test_sets=None,
                 per_image: bool = False, progress=None) -> dict:
  """The clean metric and the mean over levels for each degradation of ``plan``.

  ``predict``: a traceable clean predictor ``(variables, images_uint8) -> outputs``
  (an ensemble, a mixture-of-experts student); default ``predictor(task, model)``.
  ``max_examples``: evaluate on a class-balanced subset (``subset``; a test set's first
  images). ``test_sets``: ``{degradation: TestSet}`` scored instead of ``split`` for
  those degradations (module docstring). ``per_image`` (a task with ``per_image``, one
  process): also ``results['per_image'] = {degradation: {'test_set', 'names', 'levels'
  (None for a real set), <metric>: [[value per image] per level]}}``. ``progress``: an
  ``fdjax.train.progress.EvalProgress`` told the parts (clean, then each degradation,
  with their images x levels) and each part's end.
  """
  per_image = per_image and hasattr(task, "per_image") and jax.process_count() == 1
  variables = on_devices(variables, mesh)   # once for every split and level below
  images: dict = {}
  predict = predict or predictor(task, model)
  clean_predict = jit_clean(predict, mesh)
  full, split = split, subset(split, max_examples)
  headline, others = task.metric.name, [m.name for m in task.metrics[1:]]
  subsets: dict = {id(full): split}   # one subset per distinct set (not a copy per name)
  tested = {}
  for name in plan.names:
    whole = (test_sets or {}).get(name, full)
    if id(whole) not in subsets:
      subsets[id(whole)] = subset(whole, max_examples)
    tested[name] = subsets[id(whole)]
  if progress is not None:
    progress.plan([("clean", len(split))] + [
        (name, len(tests) * (1 if isinstance(tests, TestSet) and tests.real
                             else len(plan.eval_levels(name))))
        for name, tests in tested.items()])
  values = split_scores(task, clean_predict, variables, split, batch_size=batch_size, mesh=mesh)
  results: dict = {"clean": values[headline]}
  extra = {m: {"clean": values[m]} for m in others}
  if progress is not None:
    progress.done("clean")
  for name in plan.names:
    whole, tests = (test_sets or {}).get(name, full), tested[name]
    collect = {} if per_image else None
    scorer = task.for_degradation(name) if hasattr(task, "for_degradation") else task
    if isinstance(tests, TestSet) and tests.real:
      values = split_scores(scorer, clean_predict, variables, tests, batch_size=batch_size,
                            mesh=mesh, collect=collect)
      per_metric = {m: (values[m], []) for m in values}
      levels = [None]
    else:
      levels = [level for level, _ in plan.eval_levels(name)]
      degraded = with_degradation(predict, name, mesh, names=plan.names)
      per_level = scores_at_levels(scorer, degraded, variables,
                                   tests, name, plan.eval_levels(name), batch_size=batch_size,
                                   mesh=mesh, seed=plan.eval_seed, collect=collect)
      per_metric = {m: (mean_over_levels(p), p) for m, p in per_level.items()}
    by_set: dict = {}
    if per_image:
      images[name] = _per_image_entry(tests, levels, collect)
      by_set = per_set_means(images[name])
    mark = ({"test_set": tests.name, "synthetic": not tests.real} if test_sets else {})
    if mark and len(tests) < len(whole):   # eval.max_examples: the first n of the set
      mark["scored"] = [len(tests), len(whole)]
    all_, per = per_metric[headline]
    listed = {"explicit": True} if name in dict(plan.explicit) else {}
    sets = lambda m: {"per_set": by_set[m]} if m in by_set else {}
    results[name] = {"all": all_, "per_level": per, **mark, **listed, **sets(headline)}
    for m in others:
      extra[m][name] = {"all": per_metric[m][0], "per_level": per_metric[m][1], **listed,
                        **sets(m)}
    if progress is not None:
      progress.done(name)
  results["avg"] = float(np.mean([results[n]["all"] for n in plan.names]))
  for m in others:
    extra[m]["avg"] = float(np.mean([extra[m][n]["all"] for n in plan.names]))
  if extra:
    results["metrics"] = extra
  scoring = task.scoring_labels(plan.names) if hasattr(task, "scoring_labels") else {}
  if scoring:
    results["scoring"] = scoring
  if images:
    results["per_image"] = images
  return results


def _per_image_entry(tests, levels, collect: dict) -> dict:
  n = len(tests)
  names = list(getattr(tests, "names", ()))
  return {"test_set": getattr(tests, "name", "test"),
          "names": names if len(names) == n else [str(i) for i in range(n)],
          "levels": levels,
          **{m: [by_level[j] for j in range(len(levels))] for m, by_level in collect.items()}}
