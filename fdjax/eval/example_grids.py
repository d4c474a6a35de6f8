"""Example images of a restoration study: per task, a PNG grid of a few test images,
``input | each single-model row | target`` (``fdjax.eval.image_grid.restoration_grid``).

For task (degradation) ``d`` the images are the first ``count`` of its test set
(``Dataset.test_for(d)``, in group order), batched as the evaluation batches them
(``fdjax.eval.metric.test_batches``, ``config.eval_batch_size``):

* a synthetic set: the clean images degraded on device at ONE representative level,
  the middle of ``plan.eval_levels(d)`` (the middle explicit level, e.g. sigma 25 of
  15,25,50), with the evaluation's fixed key of that level and batch
  (``plan.eval_key``): the very inputs the rows were scored on;
* a real set (paired): the pairs' inputs and targets as they are.

Each row's image comes from ``fdjax.predictor.image_restorer`` (whole images, uint8
0..255, rounded) of the model the row runs on that task (``fdjax.methods.base.RowModel``:
the Oracle row shows the task's own expert), self-ensembled with ``eval.self_ensemble``
(as the rows were scored). Files: ``<workdir>/examples_<d>.png``, of the first seed's
models (``fdjax.pipeline``; the console's list of files says which seed).
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from fdjax import degradations
from fdjax.eval import image_grid
from fdjax.eval.metric import test_batches
from fdjax.eval.self_ensemble import configured

COUNT = 3  # test images per grid


def representative_level(plan, name: str) -> tuple[float, int]:
  """``(level, full-grid index)``: the middle of the evaluation levels of ``name``."""
  levels = plan.eval_levels(name)
  return levels[len(levels) // 2]


def task_examples(ctx, name: str, count: int = COUNT):
  """``(inputs, targets, labels)``: uint8 ``[H_i, W_i, 3]`` lists of the first ``count``
  test images of task ``name`` (module docstring) and their row labels (the image's
  name, or ``#i``, with ``@<level>`` for a synthetic set)."""
  tests = ctx.dataset.test_for(name)
  real = bool(getattr(tests, "real", False))
  level, index = representative_level(ctx.plan, name)
  inputs, targets = [], []
  for batch_index, batch in test_batches(tests, ctx.config.eval_batch_size, None):
    images = np.asarray(batch["image"])
    if real:
      degraded, clean = images, np.asarray(batch["target"])
    else:
      levels = np.full((images.shape[0],), level, np.float32)
      degraded = np.asarray(degradations.apply(name, ctx.plan.eval_key(name, index,
                                                                       batch_index),
                                               images, levels))
      clean = images
    for i in np.flatnonzero(np.asarray(batch["mask"]))[:count - len(inputs)]:
      inputs.append(degraded[i].astype(np.uint8))
      targets.append(clean[i].astype(np.uint8))
    if len(inputs) >= count:
      break
  names = [str(n) for n in getattr(tests, "names", ())[:len(inputs)]]
  names = names if len(names) == len(inputs) else [f"#{i}" for i in range(len(inputs))]
  at = "" if real else f" @{level:g}"   # the level shown, in the degradation's units
  return inputs, targets, [n + at for n in names]


def write_grids(task, ctx, row_models: Mapping, workdir: str, count: int = COUNT) -> list[str]:
  """Writes ``examples_<task>.png`` for every task of ``ctx.plan`` with a column per
  entry of ``row_models`` (row label -> ``RowModel``); returns the paths."""
  from fdjax.predictor import image_restorer

  paths = []
  for name in ctx.plan.names:
    inputs, targets, names = task_examples(ctx, name, count)
    predictors = {}
    for label, row_model in row_models.items():
      model, variables = row_model(name)
      predictors[label] = image_restorer(
          task, model or ctx.model, variables, tiling=None,
          self_ensemble=configured(ctx.config))
    path = os.path.join(workdir, f"examples_{name}.png")
    paths.append(image_grid.restoration_grid(path, predictors, inputs, targets, names=names))
  return paths
