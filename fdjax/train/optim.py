"""Optimisers and learning-rate schedules from config, with PyTorch semantics.

PyTorch's ``SGD(weight_decay=...)`` and ``RAdam(weight_decay=...)`` add
``wd * param`` to the gradient before the update (coupled L2), so both are built
as ``chain(add_decayed_weights(wd), base)``. Milestones are given in epochs and
turned into steps with ``steps_per_epoch``; the rate is multiplied by ``decay``
at each milestone (``MultiStepLR``). ``cosine`` follows ``CosineAnnealingLR``
with ``T_max`` = the run's epochs, stepped per iteration. Adam and RAdam take
``beta2`` (the second-moment decay; PyTorch's ``betas[1]``, default 0.999) from the
config; their ``beta1`` is PyTorch's 0.9.
"""

from __future__ import annotations

from typing import Sequence

import ml_collections
import optax

# The schema's default, also what configs made before the field meant (PyTorch's).
from fdjax.config import DEFAULT_BETA2

OPTIMIZERS = ("sgd", "radam", "adam")
SCHEDULES = ("constant", "multistep", "cosine")


def make_schedule(name: str, base_lr: float, *, epochs: int, steps_per_epoch: int,
                  milestones: Sequence[int] = (), decay: float = 0.2) -> optax.Schedule:
  """Learning rate as a function of the optimiser step count."""
  if name == "constant":
    return optax.constant_schedule(base_lr)
  if name == "multistep":
    bad = [m for m in milestones if m <= 0 or m > epochs]
    if bad:
      raise ValueError(f"milestones {list(milestones)} must lie in 1..epochs={epochs}; bad: {bad}")
    boundaries = {int(m) * steps_per_epoch: decay for m in milestones}
    return optax.piecewise_constant_schedule(base_lr, boundaries)
  if name == "cosine":
    return optax.cosine_decay_schedule(base_lr, decay_steps=max(1, epochs * steps_per_epoch))
  raise ValueError(f"unknown schedule {name!r}; choose from {SCHEDULES}")


def make_optimizer(cfg: ml_collections.ConfigDict, *, epochs: int, steps_per_epoch: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``cfg`` fields: name, lr, momentum, weight_decay, schedule, milestones, decay, beta2
  (absent: ``DEFAULT_BETA2``).

  Returns the transformation and its schedule (for logging the current rate).
  """
  schedule = make_schedule(cfg.schedule, cfg.lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
                           milestones=tuple(cfg.milestones), decay=cfg.decay)
  beta2 = float(cfg.get("beta2", DEFAULT_BETA2))
  if cfg.name == "sgd":
    base = optax.sgd(schedule, momentum=cfg.momentum or None)
  elif cfg.name == "radam":
    base = optax.radam(schedule, b2=beta2)
  elif cfg.name == "adam":
    base = optax.adam(schedule, b2=beta2)
  else:
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose from {OPTIMIZERS}")
  if cfg.weight_decay:
    return optax.chain(optax.add_decayed_weights(cfg.weight_decay), base), schedule
  return base, schedule
