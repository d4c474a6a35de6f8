"""The plain fine-tuning baselines: the task loss on combined degradations (one
``batch_size`` share per degradation per step), from three starting points.

    scratch   Scratch      random init
    vanilla   Vanilla FT   the clean model
    fusing    Fusing       the fused model (``fusion.init_batch_stats`` statistics)

A task whose base model already trains on every degradation from random weights
(``task.base_on_all_tasks``: restoration's joint base) makes Scratch the base's own
recipe whenever the ``scratch`` block equals the ``clean`` one: its row then reports
the base model (a copy under ``scratch/``) instead of training the same recipe twice.
"""

from __future__ import annotations

import os

from absl import logging

from fdjax.methods.base import Loadable, Method, Output, one_model
from fdjax.study.runner import Stage
from fdjax.study.training import Recipe, train_stage
from fdjax.train.objectives import balance_uses, supervised_loss, task_balance
from fdjax.train.variables_io import load_variables, save_variables, variables_exist


def combined_stage(runner, name: str, init_stage: str | None) -> dict:
  """Stage ``name`` (config block ``name``) trained on combined degradations. The three
  baselines share one compiled step when their optimizer schedules agree (Vanilla FT
  and Fusing in the quickstart): the program is the same, only the starting point
  differs."""
  ctx = runner.ctx
  degrade = ctx.plan.combined()
  init = runner.get(init_stage) if init_stage else None
  n = len(ctx.degradations)
  balance = task_balance(ctx.config, name)
  loss_fn = supervised_loss(ctx.model, ctx.task, degrade, shares=n, balance=balance)
  recipe = Recipe(loss_fn, init=init,
                  shares=n, selection_degrade=degrade,
                  selection_shares=tuple(ctx.degradations), pairs=ctx.degradations,
                  shared_step=("combined", balance))
  return train_stage(ctx, name, ctx.config[name], recipe)


def scratch_is_base(ctx) -> bool:
  """Whether Scratch is the base stage's recipe: the base trains on every degradation
  from random weights (``task.base_on_all_tasks``) and the ``scratch`` and ``clean``
  blocks (epochs, optimizer, schedule) are equal."""
  config = ctx.config
  return bool(ctx.task.base_on_all_tasks) and config.scratch.to_dict() == config.clean.to_dict()


def base_copy_stage(runner, name: str) -> dict:
  """Stage ``name`` as a copy of the base model, saved under ``<name>/variables`` (so
  that ``fdjax.load_model`` finds it there; reused when present)."""
  ctx = runner.ctx
  path = os.path.join(ctx.stage_dir(name), "variables")
  if not variables_exist(path):
    logging.info("%s: the same recipe as the base stage (blocks '%s' and 'clean' are "
                 "equal); reporting the base model", name, name)
    save_variables(path, runner.get("clean"))
  return load_variables(path, ctx.template_variables())


def _method(name: str, label: str, init_stage) -> Method:
  def init_of(ctx):
    return init_stage(ctx) if callable(init_stage) else init_stage

  def is_base_copy(ctx):  # from random weights, and the base stage's own recipe
    return init_stage is None and scratch_is_base(ctx)

  def stages(ctx):
    if is_base_copy(ctx):
      return {name: Stage(name, ("clean",), lambda r: base_copy_stage(r, name))}
    requires = (init_of(ctx),) if init_of(ctx) else ()
    return {name: Stage(name, requires, lambda r: combined_stage(r, name, init_of(r.ctx)),
                        block=name, shares=len(ctx.degradations), uses=balance_uses(ctx.config))}

  def rows(runner):
    variables = runner.get(name)
    # The base model's own evaluation when this row reports it (one evaluation, cached).
    scored = "clean" if is_base_copy(runner.ctx) else name
    return Output([(label, runner.evaluate(scored, variables))],
                  models={label: one_model(variables)})

  return Method(name, requires=lambda ctx: (name,), rows=rows, stages=stages,
                models={name: Loadable(name)})


def fused_init(ctx) -> str:
  """The fused stage that Fusing, FusionDistill and the MoE student start from."""
  return f"fused/{ctx.config.fusion.init_batch_stats}"


SCRATCH = _method("scratch", "Scratch", None)
VANILLA = _method("vanilla", "Vanilla FT", "clean")
FUSING = _method("fusing", "Fusing", fused_init)
