"""A task's scores over a split: batches through one jitted predictor, sums on device.

``predictor(task, model)`` is the ONE plain predictor of a model (``task.predict``
with the model's own input normalisation), memoised so that every evaluation of equal
modules reuses one compilation; ``jit_clean`` jits it over a mesh.

``split_scores`` is the ONE way model outputs over a split become numbers: it adds the
task's ``scores(outputs, batch) -> {metric: (sum, count)}`` over every batch and returns
``{metric: sum / count}`` (accuracy 0..1; PSNR dB, SSIM 0..1). The result tables
(``fdjax.eval.levels``, per level and per test set, in each degradation's scoring space
via ``task.for_degradation``), model selection on the validation split, greedy soups and
a population's fitness all call it; ``metrics=(task.metric.name,)`` computes only the
headline (the others are never compiled: model selection needs PSNR, not SSIM).
``batch_scorer`` and ``mean_scores`` are its per-batch and final steps, shared with the
per-level loop. ``split_scores_by_share`` adds the same means over each equal slice of
the batches (model selection on a combined degradation: one value per degradation).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdjax import data as data_lib
from fdjax.data.testsets import TestSet
from fdjax.errors import DataError
from fdjax.train.mesh import check_batch_size, data_sharding, place, replicated

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


def on_devices(variables, mesh=None):
  """``variables`` as device arrays, replicated over ``mesh`` (the default device
  without one), placed once for a whole evaluation: a host tree (numpy, as
  ``load_variables`` reads it) was copied to every device at each call of a jitted
  predictor, and a tree on one device (``stack_trees``' experts) to the others. Leaves
  already laid out so are returned as they are (``place`` without a copy)."""
  if mesh is None:
    return jax.device_put(variables)
  return place(variables, replicated(mesh), copy=False)


def eval_batches(split, batch_size: int, mesh):
  """``data.eval_batches`` placed on ``mesh`` (padded, with 'mask')."""
  if mesh is not None:
    check_batch_size(batch_size, mesh)
  sharding = None if mesh is None else data_sharding(mesh)
  return data_lib.eval_batches(split, batch_size, sharding=sharding)


def _as_testset(split) -> TestSet:
  return split if isinstance(split, TestSet) else TestSet.of_split("test", split)


def test_batches(split, batch_size: int, mesh):
  """``(batch_index, batch)`` over every group of ``split`` (ImageSet or TestSet); the
  batch index runs on over the groups (it picks the evaluation key)."""
  index = 0
  for group in _as_testset(split).groups:
    for batch in eval_batches(group, batch_size, mesh):
      yield index, batch
      index += 1


def _chosen_scores(task, metrics: tuple[str, ...] | None):
  """``(outputs, batch) -> {metric: (sum, count)}``: ``task.scores``, only the ``metrics``
  named (all when None; under jit, what is not returned is not computed)."""
  if metrics is None:
    return task.scores

  def chosen(outputs, batch):
    scores = task.scores(outputs, batch)
    return {m: scores[m] for m in metrics}

  return chosen


@functools.lru_cache(maxsize=32)
def jit_scores(task, metrics: tuple[str, ...] | None = None):
  """``jax.jit`` of ``(outputs, batch) -> {metric: (sum, count)}`` (``task.scores``), only
  the ``metrics`` named (all when None; what is not returned is not computed)."""
  return jax.jit(_chosen_scores(task, metrics))


@functools.lru_cache(maxsize=16)
def jit_scores_per_image(task):
  """``(outputs, batch) -> (task.scores(...), task.per_image(...))`` in one jitted call
  (XLA computes each image's values once for both)."""
  return jax.jit(lambda outputs, batch: (task.scores(outputs, batch),
                                         task.per_image(outputs, batch)))


def batch_scorer(task, collect: dict | None = None, metrics: tuple[str, ...] | None = None):
  """``score(outputs, batch, j) -> {metric: (sum, count)}``; with ``collect`` (a dict) it
  also appends each unmasked image's values to ``collect[metric][j]`` (host floats)."""
  if collect is None:
    plain = jit_scores(task, metrics)
    return lambda outputs, batch, j: plain(outputs, batch)
  if metrics is not None:
    raise ValueError("per-image collection scores every metric: pass metrics=None")
  both = jit_scores_per_image(task)

  def score(outputs, batch, j):
    sums, values = both(outputs, batch)
    keep = np.asarray(batch["mask"], bool)
    for metric, v in jax.device_get(values).items():
      lists = collect.setdefault(metric, {})
      lists.setdefault(j, []).extend(float(x) for x in np.asarray(v)[keep])
    return sums

  return score


def mean_scores(sums: dict, count) -> dict:
  """``{metric: [sum / count, ...]}`` as host floats, from ``{metric: [sum, ...]}``;
  ``DataError`` when no image was scored (an empty split: no mean to report)."""
  n = float(count)
  if n <= 0:
    raise DataError("no image to score: the split (or the share of it) is empty")
  return {name: [float(s) / n for s in values] for name, values in jax.device_get(sums).items()}


def split_scores(task, predict, variables, split, *, batch_size: int, mesh=None,
                 transform: Callable | None = None, metrics: Sequence[str] | None = None,
                 collect: dict | None = None) -> dict[str, float]:
  """``{metric: value}`` of a jitted ``predict(variables, images_uint8) -> outputs`` over
  ``split`` (ImageSet or TestSet): the mean of each metric over its unmasked images.

  ``transform(batch_index, images_uint8) -> images_uint8`` runs on every batch first
  (a degradation at fixed keys, for model selection and fitness); the reference
  (``batch['target']``, else ``batch['image']``) is never transformed. ``metrics``:
  only these of ``task.scores`` (all when None). ``collect``: a dict that receives
  ``{metric: {0: [value per image, in split order]}}`` (a task with ``per_image``).
  """
  score = batch_scorer(task, collect, None if metrics is None else tuple(metrics))
  total = _Sums()
  for outputs, batch in _predicted_batches(predict, variables, split, batch_size, mesh,
                                           transform):
    total.add(score(outputs, batch, 0))
  return total.means()


def split_scores_by_share(task, predict, variables, split, *, shares: int, batch_size: int,
                          mesh=None, transform: Callable | None = None,
                          metrics: Sequence[str] | None = None
                          ) -> tuple[dict[str, float], list[dict[str, float]]]:
  """``split_scores`` (the same numbers) and, for each of the ``shares`` equal
  consecutive slices of every batch, the mean of each metric over that slice's unmasked
  images: ``(overall, [share 0's, share 1's, ...])``.

  A combined degradation (``LevelPlan.combined``) degrades share i of a batch with
  degradation i, so with it as ``transform`` share i's means are degradation i's. A
  share without images (a validation split smaller than one batch) is an empty dict.
  Raises ``ValueError`` when ``batch_size`` does not split into ``shares``.
  """
  if shares < 1 or batch_size % shares:
    raise ValueError(f"a batch of {batch_size} does not split into {shares} equal shares")
  metrics = None if metrics is None else tuple(metrics)
  score, score_shares = batch_scorer(task, None, metrics), jit_share_scores(task, shares, metrics)
  total, per_share = _Sums(), [_Sums() for _ in range(shares)]
  for outputs, batch in _predicted_batches(predict, variables, split, batch_size, mesh,
                                           transform):
    # The total is scored as split_scores scores it, not summed from the shares, so the
    # mean that picks the epoch is split_scores' to the last bit (one extra PSNR per batch).
    total.add(score(outputs, batch, 0))
    for sums, scores in zip(per_share, score_shares(outputs, batch)):
      sums.add(scores)
  return total.means(), [sums.means() if sums.count else {} for sums in per_share]


@functools.lru_cache(maxsize=32)
def jit_share_scores(task, shares: int, metrics: tuple[str, ...] | None = None):
  """``jax.jit`` of ``(outputs, batch) -> [{metric: (sum, count)} of share i]``: the
  ``task.scores`` of each of ``shares`` equal consecutive slices of the batch (its mask
  restricted to the slice), only the ``metrics`` named (all when None)."""

  scores = _chosen_scores(task, metrics)

  def by_share(outputs, batch):
    size = batch["mask"].shape[0] // shares
    share_of = jnp.arange(batch["mask"].shape[0]) // size
    return [scores(outputs, {**batch, "mask": batch["mask"] & (share_of == i)})
            for i in range(shares)]

  return jax.jit(by_share)


def _predicted_batches(predict, variables, split, batch_size: int, mesh, transform):
  """``(outputs, batch)`` of ``predict`` over ``split``, each batch's images passed
  through ``transform(batch_index, images)`` first when given."""
  variables = on_devices(variables, mesh)
  for index, batch in test_batches(split, batch_size, mesh):
    images = batch["image"] if transform is None else transform(index, batch["image"])
    yield predict(variables, images), batch


class _Sums:
  """Running ``{metric: sum}`` and image count of ``batch_scorer``'s results."""

  def __init__(self):
    self.sums: dict = {}
    self.count = 0

  def add(self, scores: dict) -> None:
    for metric, (s, c) in scores.items():
      self.sums[metric] = [self.sums[metric][0] + s] if metric in self.sums else [s]
    self.count = self.count + c

  def means(self) -> dict[str, float]:
    return {metric: values[0] for metric, values in mean_scores(self.sums, self.count).items()}

