"""A task's metric over a split: batches through one jitted predictor, sums on device.

``predictor(task, model)`` is the ONE plain predictor of a model (``task.predict``
with the model's own input normalisation), memoised so that every evaluation of equal
modules reuses one compilation; ``jit_clean`` jits it over a mesh. ``split_metric``
adds the task's ``(sum, count)`` pairs over every batch of a split.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax

from fdjax import data as data_lib
from fdjax.train.mesh import check_batch_size, data_sharding, replicated

# predict(variables, images_uint8 [B,H,W,3]) -> outputs (logits [B,C] for classification)
Predict = Callable[..., jax.Array]


@functools.lru_cache(maxsize=64)
def predictor(task, model) -> Predict:
  """The plain (unjitted) ``predict(variables, images_uint8) -> outputs`` of ``model``."""

  def predict(variables, images):
    return task.predict(model, variables, images)

  return predict


@functools.lru_cache(maxsize=64)
def jit_clean(predict: Predict, mesh=None):
  """``jax.jit`` of a clean predictor (batch split over ``mesh``), memoised per predictor."""
  if mesh is None:
    return jax.jit(predict)
  return jax.jit(predict, in_shardings=(replicated(mesh), data_sharding(mesh)),
                 out_shardings=replicated(mesh))


def eval_batches(split, batch_size: int, mesh):
  """``data.eval_batches`` placed on ``mesh`` (padded, with 'mask')."""
  if mesh is not None:
    check_batch_size(batch_size, mesh)
  sharding = None if mesh is None else data_sharding(mesh)
  return data_lib.eval_batches(split, batch_size, sharding=sharding)


@functools.lru_cache(maxsize=16)
def jit_score(task):
  """``jax.jit(task.score)``, one per task: ``(outputs, batch) -> (sum, count)``."""
  return jax.jit(task.score)


def split_metric(task, predict, variables, split, *, batch_size: int, mesh=None,
                 transform: Callable | None = None) -> float:
  """``sum / count`` of ``task.score`` over ``split`` (accuracy 0..1 for classification).

  ``predict``: a jitted ``(variables, images_uint8) -> outputs``. ``transform(batch_index,
  images_uint8) -> images_uint8`` runs on every batch first (e.g. a degradation at fixed
  keys, for model selection). Padding examples are masked out.
  """
  score = jit_score(task)
  total = count = 0
  for index, batch in enumerate(eval_batches(split, batch_size, mesh)):
    images = batch["image"] if transform is None else transform(index, batch["image"])
    s, c = score(predict(variables, images), batch)
    total, count = total + s, count + c
  return float(total) / max(float(count), 1.0)
