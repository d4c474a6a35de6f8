"""Interval mean accuracy Acc(All): test accuracy at every level of a degradation grid.

FusionDistill (Daultani & Larochelle, WACV-W 2024) scores a classifier under one
degradation by its top-1 accuracy averaged over the whole grid of levels
(``fdjax.degradations.levels(name)``: jpeg quality 1..101 with 101 = clean, blur
sigma 0..5 step 0.1, awgn sigma 0..50 step 1, sapn density 0..0.25 step 0.01).

Degradation happens on device inside the same jitted function as the forward pass,
with the level a traced ``float32 [B]`` so one compilation serves every level. The
random degradations draw from fixed keys (``eval_key``): the key of a batch depends
only on (seed, degradation, level index in the full grid, batch index), so repeated
evaluations give identical numbers and every method evaluated with the same batch
size sees the very same degraded images.

Accuracies are fractions 0..1 here; ``fdjax.eval.report`` turns them into percent.
"""

from __future__ import annotations

import functools

import zlib
from typing import Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdjax import data as data_lib
from fdjax import degradations
from fdjax.data.splits import balanced_subset
from fdjax.models import normalize
from fdjax.train.mesh import check_batch_size, data_sharding, replicated

DEFAULT_SEED = 301  # numpy seed of the reference code; here the base of our PRNG keys

# predict(variables, images_uint8 [B,H,W,3]) -> logits [B,C]
Predict = Callable[..., jax.Array]
# predict_fn(variables, images_uint8 [B,H,W,3], levels float32 [B], key) -> logits [B,C]
LevelPredict = Callable[..., jax.Array]


def name_id(name: str) -> int:
  """A stable non-negative int32 id for a degradation name (CRC-32, not Python's hash)."""
  return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


def eval_key(seed: int, name: str, level_index: int, batch_index: int) -> jax.Array:
  """The fixed key for degrading batch ``batch_index`` at grid point ``level_index``.

  ``fold_in(fold_in(fold_in(PRNGKey(seed), name_id(name)), level_index), batch_index)``.
  ``level_index`` is the position in the FULL grid ``degradations.levels(name)``, so a
  reduced run (``level_stride``) sees the same images as a full one at shared levels.
  Returns a raw ``uint32 [2]`` key.
  """
  key = jax.random.fold_in(jax.random.PRNGKey(seed), name_id(name))
  return jax.random.fold_in(jax.random.fold_in(key, level_index), batch_index)


@functools.lru_cache(maxsize=64)
def with_degradation(predict: Predict, name: str, mesh=None) -> LevelPredict:
  """Wraps a clean-image ``predict(variables, images)`` into one jitted
  ``(variables, images_uint8 [B,H,W,3], levels float32 [B], key) -> logits [B,C]``
  that applies ``degradations.apply(name, ...)`` on device first.

  ``predict`` may be any traceable predictor (one model, a stacked ensemble of
  experts, a mixture-of-experts student). With ``mesh`` the batch and levels are
  split over ``data``; variables and key are replicated and the logits gathered.
  Memoised on ``(predict, name, mesh)``, so every model evaluated through the same
  predictor reuses one compiled function per degradation.
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


@functools.lru_cache(maxsize=64)
def model_predict(model, normalization: str) -> Predict:
  """The plain (unjitted) ``predict(variables, images_uint8) -> logits`` of one model.

  Memoised: equal Flax modules (same hyperparameters) get the same function object,
  which lets ``with_degradation`` and ``jit_clean`` reuse their compilations."""

  def predict(variables, images):
    logits, _ = model.apply(variables, normalize(images, normalization), train=False)
    return logits

  return predict


def make_degraded_predict(model, normalization: str, name: str, mesh=None) -> LevelPredict:
  """One jitted ``(variables, images_uint8 [B,H,W,3], levels float32 [B], key) -> logits``:
  degrade with ``name`` on device, normalise, run ``model`` in eval mode."""
  return with_degradation(model_predict(model, normalization), name, mesh)


def stride_levels(grid: Sequence[float], stride: int) -> np.ndarray:
  """Every ``stride``-th point of ``grid``, always including its first and last point."""
  grid = np.asarray(grid)
  if stride < 1:
    raise ValueError(f"level_stride must be >= 1, got {stride}")
  picked = list(range(0, len(grid), stride))
  if picked[-1] != len(grid) - 1:
    picked.append(len(grid) - 1)
  return grid[picked]


def level_indices(name: str, levels: Iterable[float]) -> list[int]:
  """Positions of ``levels`` in the full grid of ``name`` (raises if one is off-grid)."""
  grid = np.asarray(degradations.levels(name), np.float64)
  out = []
  for level in levels:
    i = int(np.argmin(np.abs(grid - float(level))))
    if not np.isclose(grid[i], float(level), rtol=0, atol=1e-6):
      raise ValueError(f"level {level} is not on the {name} grid {grid.tolist()}")
    out.append(i)
  return out


SUBSET_SEED = 0  # fixed: every method and run evaluates the very same subset


def subset(split, max_examples: int | None):
  """At most ``max_examples`` examples of an ``ImageSet``, spread evenly over classes
  (all when None).

  The subset is a seeded, class-balanced draw (``fdjax.data.splits.balanced_subset``),
  kept in split order. It is never a prefix: image-folder splits are sorted by class,
  so the first 1,000 CIFAR-10 test images are all airplanes.
  """
  if max_examples is None or max_examples >= len(split.labels):
    return split
  idx = balanced_subset(np.asarray(split.labels), max_examples, SUBSET_SEED)
  return data_lib.take(split, idx)


def _batches(split, batch_size: int, mesh):
  if mesh is not None:
    check_batch_size(batch_size, mesh)
  sharding = None if mesh is None else data_sharding(mesh)
  return data_lib.eval_batches(split, batch_size, sharding=sharding)


@jax.jit
def _correct(logits, labels, mask) -> jax.Array:
  """int32 scalar: correct top-1 predictions among the unmasked examples."""
  hits = (jnp.argmax(logits, axis=-1) == labels) & mask
  return jnp.sum(hits.astype(jnp.int32))


def evaluate_levels(model, variables, split, name: str, *, normalization: str | None = None,
                    batch_size: int, mesh=None, levels: Sequence[float] | None = None,
                    seed: int = DEFAULT_SEED,
                    predict_fn: LevelPredict | None = None) -> dict[float, float]:
  """Top-1 accuracy (0..1) of ``model`` on ``split`` degraded by ``name`` at each level.

  Args:
    model, normalization: the model and its input statistics; unused with ``predict_fn``.
    variables: passed unchanged to the predictor.
    split: an ``ImageSet`` (uint8 ``[N,H,W,3]``, int32 labels ``[N]``).
    levels: grid points to evaluate (default: the whole grid of ``name``); each must
      lie on the grid, since its grid index selects the fixed key.
    seed: base of the fixed keys (see ``eval_key``).
    predict_fn: ``(variables, images_uint8 [B,H,W,3], levels float32 [B], key) ->
      logits [B,C]``, replacing ``make_degraded_predict(model, ...)``; it must apply
      the degradation itself (``with_degradation`` builds one from a clean predictor).

  Returns ``{level (float): accuracy}`` in the order of ``levels``. Padding examples of
  the last batch are masked out. Each batch is read once and evaluated at every level;
  counts stay on device until the end.
  """
  grid_levels = degradations.levels(name) if levels is None else levels
  grid_levels = [float(v) for v in np.asarray(grid_levels, np.float64)]
  indices = level_indices(name, grid_levels)
  if predict_fn is None:
    if normalization is None:
      raise ValueError("evaluate_levels needs `normalization` unless `predict_fn` is given")
    predict_fn = make_degraded_predict(model, normalization, name, mesh)
  correct = [jnp.zeros((), jnp.int32) for _ in grid_levels]
  total = jnp.zeros((), jnp.int32)
  for batch_index, batch in enumerate(_batches(split, batch_size, mesh)):
    images, labels, mask = batch["image"], batch["label"], batch["mask"]
    size = images.shape[0]
    total = total + jnp.sum(jnp.asarray(mask).astype(jnp.int32))
    for j, (level, index) in enumerate(zip(grid_levels, indices)):
      level_vector = np.full((size,), level, np.float32)
      logits = predict_fn(variables, images, level_vector,
                          eval_key(seed, name, index, batch_index))
      correct[j] = correct[j] + _correct(logits, labels, mask)
  n = max(int(total), 1)
  return {level: int(c) / n for level, c in zip(grid_levels, jax.device_get(correct))}


def acc_all(per_level: Mapping[float, float]) -> float:
  """Acc(All): the plain mean of the per-level accuracies (0..1)."""
  if not per_level:
    raise ValueError("acc_all of an empty level dict")
  return float(np.mean(list(per_level.values())))


def clean_accuracy(predict: Predict, variables, split, *, batch_size: int, mesh=None) -> float:
  """Top-1 accuracy (0..1) of a jitted clean ``predict(variables, images)`` on ``split``."""
  correct = total = jnp.zeros((), jnp.int32)
  for batch in _batches(split, batch_size, mesh):
    correct = correct + _correct(predict(variables, batch["image"]), batch["label"],
                                 batch["mask"])
    total = total + jnp.sum(jnp.asarray(batch["mask"]).astype(jnp.int32))
  return int(correct) / max(int(total), 1)


@functools.lru_cache(maxsize=64)
def jit_clean(predict: Predict, mesh=None):
  """``jax.jit`` of a clean predictor (batch split over ``mesh``), memoised per predictor."""
  if mesh is None:
    return jax.jit(predict)
  return jax.jit(predict, in_shardings=(replicated(mesh), data_sharding(mesh)),
                 out_shardings=replicated(mesh))


def evaluate_all(model, variables, split, names: Sequence[str] | None = None, *,
                 normalization: str | None = None, batch_size: int, mesh=None,
                 level_stride: int = 1, max_examples: int | None = None,
                 seed: int = DEFAULT_SEED, predict: Predict | None = None) -> dict:
  """Clean accuracy and Acc(All) for each degradation in ``names`` (default: all four).

  Args:
    level_stride: evaluate every k-th grid point (both ends always included); 1 = the
      full grid as in the paper, larger for reduced CPU runs.
    max_examples: evaluate on a class-balanced subset of this many examples (``subset``).
    predict: optional traceable clean predictor ``(variables, images_uint8) -> logits``
      replacing ``model`` (an ensemble of experts, a mixture-of-experts student).

  Returns ``{'clean': acc, name: {'acc_all': acc, 'per_level': {level: acc}}, ...,
  'avg': mean of the acc_all}`` with accuracies 0..1.
  """
  names = tuple(degradations.NAMES if names is None else names)
  if predict is None:
    if normalization is None:
      raise ValueError("evaluate_all needs `normalization` unless `predict` is given")
    predict = model_predict(model, normalization)
  split = subset(split, max_examples)
  clean_predict = jit_clean(predict, mesh)
  results: dict = {"clean": clean_accuracy(clean_predict, variables, split,
                                           batch_size=batch_size, mesh=mesh)}
  for name in names:
    per_level = evaluate_levels(
        model, variables, split, name, batch_size=batch_size, mesh=mesh, seed=seed,
        levels=stride_levels(degradations.levels(name), level_stride),
        predict_fn=with_degradation(predict, name, mesh))
    results[name] = {"acc_all": acc_all(per_level), "per_level": per_level}
  results["avg"] = float(np.mean([results[n]["acc_all"] for n in names])) if names else None
  return results
