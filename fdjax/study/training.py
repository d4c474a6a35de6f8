"""``train_stage``: train one stage (or reuse / resume it) with the one loop and step.

Layout under a seed's workdir: ``<stage>/checkpoints/<step>/`` (TrainState, resume),
``<stage>/variables/`` (final ``{'params','batch_stats'}``: its presence = the stage is
complete), ``<stage>/metrics.jsonl``.

Resume order, in one place: a stage with ``variables/`` is reused as is; else a stage
with checkpoints resumes from the latest; else it starts from ``recipe.init`` (an
earlier stage's variables, or a fresh init from the seed).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
from absl import logging

from fdjax import data as data_lib
from fdjax.study.best_epoch import BestOnValidation
from fdjax.study.context import RunContext
from fdjax.train import (Checkpointer, LoopConfig, create_train_state, fit,
                         init_variables, make_optimizer, make_train_step)
from fdjax.train.ema import evaluated_variables, with_parameter_ema
from fdjax.train.variables_io import load_variables, save_variables, variables_exist


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How one stage trains, besides its config block (epochs, optimizer).

  loss_fn: the step's loss (``fdjax.train.step``). init: starting variables, or None
  for a fresh init from the seed. frozen: read-only teacher variables. shares: images
  per step = ``shares * config.batch_size`` and an epoch visits the training split
  ``shares`` times (combined-degradation stages: one share and one pass per
  degradation, as the reference iterates one loader per degradation; its loaders, seeded
  alike, put the same images in every share, fdjax's shares draw their own:
  ``fdjax.data.share_pools``). selection_degrade:
  ``degrade(key, images)`` for the validation metric that picks the best epoch when
  ``config.selection == 'val'``. selection_shares: the names of selection_degrade's
  equal consecutive shares (a combined degradation: the degradations); with two or
  more, each epoch also reports the metric per share (``val_<metric>/<name>`` in
  ``metrics.jsonl`` and ``best.json``); the best epoch is still picked on the mean.
  model: the trained network (default: the dense model).
  grad_fn, wrap_tx: per-task gradients and the optax wrapper combining them.
  make_state: ``(variables, tx, rng, mesh) -> TrainState`` (default ``create_train_state``),
  e.g. a population state carrying its evolution. on_epoch_end: ``fit``'s epoch hook
  (may return a new state); when given, it replaces ``selection='val'`` and the stage
  keeps its last state. pairs: degradations whose real training pairs
  (``Dataset.train_pairs``, restoration) join the training split
  (``fdjax.data.share_pools.training_data``: with several shares, each share draws its
  own permutation of the clean tiles and its own degradation's pairs). shared_step: stages with the same (hashable) value and
  the same optimizer schedule reuse ONE compiled train step within a run (the experts:
  one compilation instead of one per degradation); their ``loss_fn`` must then be one
  function that reads whatever differs between them from ``frozen``.
  """

  loss_fn: Callable
  init: dict | None = None
  frozen: object = None
  shares: int = 1
  selection_degrade: Callable | None = None
  selection_shares: tuple[str, ...] = ()
  model: object = None
  grad_fn: Callable | None = None
  wrap_tx: Callable | None = None
  make_state: Callable | None = None
  on_epoch_end: Callable | None = None
  pairs: tuple[str, ...] = ()
  shared_step: object = None


def stage_variables_path(ctx: RunContext, name: str) -> str:
  return os.path.join(ctx.stage_dir(name), "variables")


def is_complete(ctx: RunContext, name: str) -> bool:
  return variables_exist(stage_variables_path(ctx, name))


def load_stage(ctx: RunContext, name: str, model=None) -> dict:
  return load_variables(stage_variables_path(ctx, name), ctx.template_variables(model))


def steps_per_epoch(ctx: RunContext, shares: int = 1, pairs: tuple[str, ...] = ()) -> int:
  """Steps of one epoch of a stage with ``shares`` and the real training pairs of
  ``pairs`` (``fdjax.data.share_pools.training_data``): what ``train_stage`` runs."""
  return data_lib.num_batches(data_lib.training_size(ctx.dataset, pairs, shares),
                              shares * ctx.config.batch_size, drop_remainder=True)


def stage_key(seed: int, name: str) -> jax.Array:
  """The stage's training key: ``fold_in(PRNGKey(seed), stable_id(name))``."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), _stable_id(name))


def train_stage(ctx: RunContext, name: str, stage_cfg, recipe: Recipe) -> dict:
  """Trains stage ``name`` (``stage_cfg``: epochs, optimizer) and returns its variables."""
  model = recipe.model or ctx.model
  if is_complete(ctx, name):
    logging.info("[%s] complete; reusing %s", name, stage_variables_path(ctx, name))
    return load_stage(ctx, name, model)
  config, stage_dir = ctx.config, ctx.stage_dir(name)
  if config.selection not in ("last", "val"):
    raise ValueError(f"selection must be 'last' or 'val', got {config.selection!r}")
  train_split = data_lib.training_data(ctx.dataset, recipe.pairs, recipe.shares)
  per_epoch = data_lib.num_batches(len(train_split), recipe.shares * config.batch_size,
                                   drop_remainder=True)
  tx, schedule = make_optimizer(stage_cfg.optimizer, epochs=stage_cfg.epochs,
                                steps_per_epoch=max(per_epoch, 1))
  if recipe.wrap_tx is not None:
    tx = recipe.wrap_tx(tx)
  tx = with_parameter_ema(tx, stage_cfg.optimizer.get("ema_decay", 0.0))   # last in the chain
  init = recipe.init
  if init is None:
    init = init_variables(model, jax.random.fold_in(jax.random.PRNGKey(ctx.seed), 0),
                          ctx.dataset.image_shape)
  state = (recipe.make_state or create_train_state)(init, tx, stage_key(ctx.seed, name), ctx.mesh)
  checkpointer = Checkpointer(os.path.join(stage_dir, "checkpoints"),
                              max_to_keep=config.checkpoint.keep,
                              on_corrupt=config.checkpoint.on_corrupt)
  loop = LoopConfig(epochs=stage_cfg.epochs, batch_size=recipe.shares * config.batch_size,
                    seed=ctx.seed, log_every_steps=config.log_every_steps,
                    checkpoint_every_steps=config.checkpoint.every_steps)
  selector = BestOnValidation(ctx, name, recipe.selection_degrade, model,
                               recipe.selection_shares) if (
      config.selection == "val" and ctx.dataset.validation is not None
      and recipe.on_epoch_end is None) else None
  on_epoch_end = recipe.on_epoch_end or (selector.on_epoch_end if selector else None)
  step_fn = _train_step(ctx, recipe, tx, (stage_cfg.optimizer.to_json(), stage_cfg.epochs,
                                           per_epoch, recipe.shares))
  try:
    state = fit(state, step_fn, train_split, loop=loop, mesh=ctx.mesh, workdir=stage_dir,
                schedule=schedule, name=name, checkpointer=checkpointer,
                frozen=recipe.frozen, on_epoch_end=on_epoch_end, study=ctx.study)
  finally:
    checkpointer.close()   # orbax's manager: its threads end here, not when collected
  variables = selector.best() if selector else evaluated_variables(state)
  save_variables(stage_variables_path(ctx, name), variables)
  return load_stage(ctx, name, model)


def _train_step(ctx: RunContext, recipe: Recipe, tx, schedule: tuple):
  """The stage's jitted step; with ``recipe.shared_step``, the one already compiled in
  this run for the same shared_step and ``schedule`` (optimizer config, epochs, steps per
  epoch, shares: what ``tx`` and the batch shape depend on) when there is one."""
  def build():
    return make_train_step(recipe.loss_fn, tx, ctx.mesh,
                           **({"grad_fn": recipe.grad_fn} if recipe.grad_fn else {}))

  if recipe.shared_step is None:
    return build()
  key = (recipe.shared_step, schedule)
  if key not in ctx.steps:
    ctx.steps[key] = build()
  return ctx.steps[key]


def _stable_id(name: str) -> int:
  return sum((i + 1) * ord(c) for i, c in enumerate(name)) % (2**31 - 1)
