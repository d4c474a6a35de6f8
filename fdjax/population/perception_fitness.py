"""The perception family's fitness values: (PSNR, -perceptual distance) per member.

``ea_adam.perception_fitness`` picks the perceptual objective's fitness (maximised as
its negation; the evolution minimises the negated values):

* ``'gradient_w1'`` (default): ``fdjax.eval.gradient_stats.gradient_w1``, the 1-D
  Wasserstein-1 distance between the gradient-magnitude distributions of the restored
  and the clean luma (0..255 units, the task's Y channel and shave); any tile size.
* ``'niqe'``: ``fdjax.eval.niqe.niqe`` of the restored tiles (no reference; the task's
  shave cropped first; lower = more natural). Needs validation tiles with two whole
  96x96 blocks after the crop (``fdjax.validate_population`` refuses smaller tiles:
  ``data.tile >= 200`` at shave 4: T91, whose images are as small as 78 px, cannot give
  such tiles, so ``configs/population_sr.py`` keeps 'gradient_w1'). One NIQE compilation
  per tile size, paid by the first evolutionary epoch (measured, P = 5 width-16 U-Nets,
  24 CBSD432 tiles of 200 px, loaded 2-core CPU: first epoch 7.6 s with NIQE vs 7.5 s
  with gradient_w1, later epochs 3.7 s vs 5.0 s: NIQE costs no more).

``PerceptionScores`` is a scorer for ``fdjax.eval.metric.split_scores`` (the one split
scorer: float32 sums on device); ``perception_values`` runs it per member.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from fdjax.errors import ConfigError
from fdjax.eval.gradient_stats import GRADIENT_MAX, gradient_w1
from fdjax.eval.metric import jit_clean, predictor, split_scores
from fdjax.eval.niqe import niqe
from fdjax.population.fitness import validation_subset
from fdjax.study.fixed_keys import fixed_key_transform
from fdjax.tasks.base import masked_sum
from fdjax.trees import unstack_tree

NIQE_REF = 1000.0  # hypervolume reference for NIQE (no upper bound; untrained U-Nets ~500)
# name -> the perceptual objective's worst value (the hypervolume reference is its negation)
FITNESS = {"gradient_w1": GRADIENT_MAX, "niqe": NIQE_REF}


def _gradient_w1(task, outputs, batch):
  return gradient_w1(outputs, batch.get("target", batch["image"]),
                     y_channel=task.y_channel, shave=task.shave)


def _niqe(task, outputs, batch):
  del batch  # no reference
  return niqe(outputs, crop_border=int(task.shave))


DISTANCES = {"gradient_w1": _gradient_w1, "niqe": _niqe}


def check_fitness(name: str) -> str:
  """``name`` when it is a known perception fitness, else a one-line ConfigError."""
  if name not in FITNESS:
    raise ConfigError(f"ea_adam.perception_fitness must be one of {sorted(FITNESS)}, "
                      f"got {name!r}")
  return name


@dataclasses.dataclass(frozen=True)
class PerceptionScores:
  """``scores(outputs, batch) -> {'psnr': (sum dB, count), fitness: (sum, count)}``
  over the unmasked images (``outputs`` 0..255 ``[B, H, W, 3]``; PSNR as ``task.scores``
  gives it; ``fitness`` ('gradient_w1' or 'niqe') the distance per image, lower is
  better)."""

  task: object
  fitness: str = "gradient_w1"

  def scores(self, outputs, batch: dict) -> dict:
    mask = batch["mask"]
    d = DISTANCES[self.fitness](self.task, outputs, batch)
    plain = dataclasses.replace(self.task, extra_metrics=())  # PSNR only: no NIQE column
    return {"psnr": plain.scores(outputs, batch)["psnr"],
            self.fitness: masked_sum(d, mask)}


def perception_values(ctx, max_examples: int, fitness: str = "gradient_w1"):
  """``values(stacked) -> float64 [P, 2]``: per member (PSNR dB, -distance) over the
  first ``max_examples`` validation images degraded by the plan at fixed keys."""
  scorer = PerceptionScores(ctx.task, check_fitness(fitness))
  split = validation_subset(ctx, max_examples)
  predict = jit_clean(predictor(ctx.task, ctx.model), ctx.mesh)
  transform = fixed_key_transform(ctx, ctx.plan.combined())

  def values(stacked) -> np.ndarray:
    count = jax.tree.leaves(stacked)[0].shape[0]
    out = np.zeros((count, 2))
    for i in range(count):
      v = split_scores(scorer, predict, unstack_tree(stacked, i), split,
                       batch_size=ctx.config.eval_batch_size, mesh=ctx.mesh, transform=transform)
      out[i] = [v["psnr"], -v[fitness]]
    return out

  return values
