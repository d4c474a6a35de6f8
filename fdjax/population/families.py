"""What a population optimises: the objective family of ``config.ea_adam.objectives``.

``objectives_of(ctx) -> Objectives``, one family per value, so that the EA-Adam method
(``fdjax.methods.ea_adam``) never asks which task it runs:

* ``'degradations'`` (default; classification): objective 0 = clean images, k = the
  k-th degradation of the plan, one batch share each (``fdjax.population.objectives``);
  values = the task metric per objective on validation images
  (``fdjax.population.fitness``), in the direction of "higher is better";
* ``'perception'`` (restoration, EA-Adam's super-resolution setting): distortion = L1 and
  perception = RaGAN against a discriminator per member (``fdjax.population.adversarial``),
  both on the same batch degraded by the plan (e.g. x4 'sr'); values per member =
  (validation PSNR in dB, as the task scores it: Y and shave from ``config.restoration``;
  minus a perceptual distance chosen by ``ea_adam.perception_fitness``: 'gradient_w1'
  (``fdjax.eval.gradient_stats``, a cheap discriminator-free proxy, 0..255 units) or
  'niqe' (``fdjax.eval.niqe``, no reference); ``fdjax.population.perception_fitness``).
  Both go through ``fdjax.eval.metric.split_scores``, the one split scorer.

Every family gives ``values(max_examples) -> (stacked variables -> float64 [P, M])``
to MAXIMISE (the evolution minimises their negation), the hypervolume reference point,
and ``merge_weights(values) -> [P]`` (> 0) for the best member and the weighted average.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from fdjax.errors import ConfigError
from fdjax.population import adversarial
from fdjax.population.fitness import member_metrics
from fdjax.population.perception_fitness import FITNESS, check_fitness, perception_values
from fdjax.population.objectives import clean_and_combined, objective_names, share_losses

FAMILIES = ("degradations", "perception")


@dataclasses.dataclass(frozen=True)
class Objectives:
  """names: objective k's name. shares: batch shares per step (``Recipe.shares``).
  loss_fn: ONE member's loss (``metrics['task_losses']`` ``[M]``). values: see the module
  docstring. init_critic: ``(key, count) -> stacked critic`` or None. ref: hypervolume
  reference (None: 0). scale, unit: how the report and plot show the values."""

  names: tuple[str, ...]
  shares: int
  loss_fn: Callable
  values: Callable[[int], Callable]
  init_critic: Callable | None = None
  ref: tuple[float, ...] | None = None
  scale: float = 1.0
  unit: str = ""
  merge_weights: Callable[[np.ndarray], np.ndarray] = lambda v: np.maximum(v.mean(axis=1), 1e-12)


def objectives_of(ctx) -> Objectives:
  """The family of ``ctx.config.ea_adam.objectives`` (module docstring)."""
  cfg = ctx.config.ea_adam
  family = cfg.get("objectives", "degradations")
  if family == "degradations":
    return _degradations(ctx)
  if family == "perception":
    return _perception(ctx)
  raise ConfigError(f"ea_adam.objectives must be one of {FAMILIES}, got {family!r}")


def _degradations(ctx) -> Objectives:
  names = objective_names(ctx.plan)
  metric = ctx.task.metric

  def values(max_examples):
    metrics = member_metrics(ctx, max_examples)
    return lambda stacked: metric.signed(metrics(stacked))

  return Objectives(names, len(names), share_losses(ctx.model, ctx.task,
                                                    clean_and_combined(ctx.plan), len(names)),
                    values, scale=metric.scale, unit=metric.unit)


def normalised_mean(values: np.ndarray) -> np.ndarray:
  """``[P]``: per member, the mean over objectives of its value min-max normalised over
  the population (0 worst, 1 best; an objective where all are equal counts 1), plus
  1e-3 so that every weight is positive: objectives on different scales weigh alike."""
  values = np.asarray(values, np.float64)
  low, high = values.min(axis=0), values.max(axis=0)
  span = np.where(high > low, high - low, 1.0)
  normalised = np.where(high > low, (values - low) / span, 1.0)
  return normalised.mean(axis=1) + 1e-3


def _perception(ctx) -> Objectives:
  task, cfg = ctx.task, ctx.config.ea_adam
  if getattr(task, "y_channel", None) is None or not hasattr(task, "per_image"):
    raise ConfigError("ea_adam.objectives='perception' needs a task whose outputs are "
                      "images (config.task='restoration')")
  discriminator = adversarial.Discriminator(int(cfg.get("critic_width", 16)),
                                            int(cfg.get("critic_depth", 3)))
  critic_tx = adversarial.critic_optimizer(float(cfg.get("critic_lr", 1e-4)))
  loss_fn = adversarial.adversarial_loss(ctx.model, task, ctx.plan.combined(), discriminator,
                                         critic_tx)
  patch = int(task.patch or ctx.dataset.image_shape[0])
  fitness = check_fitness(cfg.get("perception_fitness", "gradient_w1"))

  def init_critic(key, count):
    return adversarial.init_critic(discriminator, critic_tx, key, count, (patch, patch, 3))

  return Objectives((adversarial.DISTORTION, adversarial.PERCEPTION), len(ctx.plan.names),
                    loss_fn, lambda n: perception_values(ctx, n, fitness), init_critic,
                    ref=(0.0, -FITNESS[fitness]), merge_weights=normalised_mean)
