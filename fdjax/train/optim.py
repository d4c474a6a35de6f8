"""Optimisers and learning-rate schedules from config, with PyTorch semantics.

PyTorch's ``SGD(weight_decay=...)`` and ``RAdam(weight_decay=...)`` add
``wd * param`` to the gradient before the update (coupled L2), so both are built
as ``chain(add_decayed_weights(wd), base)``. Milestones are given in epochs and
turned into steps with ``steps_per_epoch``; the rate is multiplied by ``decay``
at each milestone (``MultiStepLR``). ``cosine`` follows ``CosineAnnealingLR``
with ``T_max`` = the run's epochs, stepped per iteration. Adam and RAdam take
``beta2`` (the second-moment decay; PyTorch's ``betas[1]``, default 0.999) from the
config and their ``beta1`` (``betas[0]``) from ``momentum``, whose default 0.9 is
PyTorch's (NAFNet trains with betas (0.9, 0.9)); SGD ignores ``beta2`` and ``decay``
belongs to ``multistep`` (``fdjax.validate`` refuses them changed where nothing reads
them). ``adamw`` is PyTorch's ``AdamW``: the weight
decay is decoupled (``p -= lr * wd * p`` beside the Adam step), as PromptIR trains.
RAdam is optax's, which differs from ``torch.optim.RAdam`` in two places: it adds
``eps`` (1e-8) to the bias-corrected ``sqrt(v_hat)`` where PyTorch adds it before the
correction (PyTorch's effective eps is ``eps / sqrt(1 - beta2^t)``, about 13x larger at
step 6 with beta2 0.999; the updates differ only for parameters whose gradients are
near 1e-6 or below), and it computes the rectification term in float32, which cancels
badly for beta2 above 0.999 (``fdjax.validate`` refuses those for RAdam).

Two options of the restoration recipes, both off by default:

* ``warmup_epochs`` > 0: the rate rises linearly, ``lr * (n + 1) / W`` at step n < W
  (W = ``round(warmup_epochs * steps_per_epoch)``, at most the stage's steps - 1),
  reaching ``lr`` at step W - 1, then follows the schedule: ``cosine`` over the remaining
  ``epochs * steps_per_epoch - W`` steps, ``multistep`` at its milestones (epochs from
  the stage's start), ``constant`` at ``lr``. With ``cosine`` this is PyTorch Lightning
  Bolts' ``LinearWarmupCosineAnnealingLR`` (PromptIR's, stepped there once an epoch)
  stepped per iteration, except that Bolts' rise ``lr * n / (W - 1)`` starts at 0, a
  step without an update.
* ``clip_norm`` > 0: the gradient is scaled to that global L2 norm when it is larger
  (``torch.nn.utils.clip_grad_norm_`` before ``step``), before any weight decay.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import ml_collections
import optax

# The schema's default, also what configs made before the field meant (PyTorch's).
from fdjax.config import DEFAULT_BETA2

OPTIMIZERS = ("sgd", "radam", "adam", "adamw")
SCHEDULES = ("constant", "multistep", "cosine")


def make_schedule(name: str, base_lr: float, *, epochs: int, steps_per_epoch: int,
                  milestones: Sequence[int] = (), decay: float = 0.2,
                  warmup_steps: int = 0) -> optax.Schedule:
  """Learning rate as a function of the optimiser step count (module docstring)."""
  total = max(1, epochs * steps_per_epoch)
  warmup_steps = int(warmup_steps)
  if not 0 <= warmup_steps < total:
    raise ValueError(f"warmup_steps must lie in 0..{total - 1} (the stage's steps - 1), got "
                     f"{warmup_steps}")
  if name == "constant":
    main = optax.constant_schedule(base_lr)
  elif name == "multistep":
    bad = [m for m in milestones if m <= 0 or m > epochs]
    if bad:
      raise ValueError(f"milestones {list(milestones)} must lie in 1..epochs={epochs}; bad: {bad}")
    boundaries = {int(m) * steps_per_epoch: decay for m in milestones}
    main = optax.piecewise_constant_schedule(base_lr, boundaries)
  elif name == "cosine":
    cosine = optax.cosine_decay_schedule(base_lr, decay_steps=max(1, total - warmup_steps))
    main = (lambda count: cosine(jnp.maximum(count - warmup_steps, 0))) if warmup_steps else cosine
  else:
    raise ValueError(f"unknown schedule {name!r}; choose from {SCHEDULES}")
  if not warmup_steps:
    return main
  return lambda count: jnp.where(count < warmup_steps,
                                 base_lr * (count + 1) / warmup_steps, main(count))


def make_optimizer(cfg: ml_collections.ConfigDict, *, epochs: int, steps_per_epoch: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """``cfg`` fields: name, lr, momentum, weight_decay, schedule, milestones, decay, beta2,
  warmup_epochs, clip_norm (absent: ``DEFAULT_BETA2``, 0, 0).

  Returns the transformation and its schedule (for logging the current rate).
  """
  # At most the stage's steps - 1, however the fraction of an epoch rounds.
  warmup = min(round(float(cfg.get("warmup_epochs", 0)) * steps_per_epoch),
               max(1, epochs * steps_per_epoch) - 1)
  schedule = make_schedule(cfg.schedule, cfg.lr, epochs=epochs, steps_per_epoch=steps_per_epoch,
                           milestones=tuple(cfg.milestones), decay=cfg.decay,
                           warmup_steps=warmup)
  beta2 = float(cfg.get("beta2", DEFAULT_BETA2))
  if cfg.name == "sgd":
    base = optax.sgd(schedule, momentum=cfg.momentum or None)
  elif cfg.name == "radam":
    base = optax.radam(schedule, b1=float(cfg.momentum), b2=beta2)
  elif cfg.name == "adam":
    base = optax.adam(schedule, b1=float(cfg.momentum), b2=beta2)
  elif cfg.name == "adamw":
    base = optax.adamw(schedule, b1=float(cfg.momentum), b2=beta2,
                       weight_decay=cfg.weight_decay)   # decoupled
  else:
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose from {OPTIMIZERS}")
  chain = []
  if cfg.get("clip_norm", 0.0):
    chain.append(optax.clip_by_global_norm(float(cfg.clip_norm)))
  if cfg.weight_decay and cfg.name != "adamw":   # coupled L2, as PyTorch's SGD/Adam/RAdam
    chain.append(optax.add_decayed_weights(cfg.weight_decay))
  return (optax.chain(*chain, base) if chain else base), schedule
