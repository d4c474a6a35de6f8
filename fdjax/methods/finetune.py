"""The plain fine-tuning baselines: the task loss on combined degradations (one
``batch_size`` share per degradation per step), from three starting points.

    scratch   Scratch      random init
    vanilla   Vanilla FT   the clean model
    fusing    Fusing       the fused model (``fusion.init_batch_stats`` statistics)
"""

from __future__ import annotations

from fdjax.methods.base import Loadable, Method, Output, one_model
from fdjax.study.runner import Stage
from fdjax.study.training import Recipe, train_stage
from fdjax.train.objectives import balance_uses, supervised_loss, task_balance


def combined_stage(runner, name: str, init_stage: str | None) -> dict:
  """Stage ``name`` (config block ``name``) trained on combined degradations. The three
  baselines share one compiled step when their optimizer schedules agree (Vanilla FT
  and Fusing in the quickstart): the program is the same, only the starting point
  differs."""
  ctx = runner.ctx
  degrade = ctx.plan.combined()
  init = runner.get(init_stage) if init_stage else None
  n = len(ctx.degradations)
  loss_fn = supervised_loss(ctx.model, ctx.task, degrade, shares=n,
                            balance=task_balance(ctx.config))
  recipe = Recipe(loss_fn, init=init,
                  shares=n, selection_degrade=degrade,
                  pairs=ctx.degradations, shared_step="combined")
  return train_stage(ctx, name, ctx.config[name], recipe)


def _method(name: str, label: str, init_stage) -> Method:
  def init_of(ctx):
    return init_stage(ctx) if callable(init_stage) else init_stage

  def stages(ctx):
    requires = (init_of(ctx),) if init_of(ctx) else ()
    return {name: Stage(name, requires, lambda r: combined_stage(r, name, init_of(r.ctx)),
                        block=name, shares=len(ctx.degradations), uses=balance_uses(ctx.config))}

  def rows(runner):
    variables = runner.get(name)
    return Output([(label, runner.evaluate(name, variables))],
                  models={label: one_model(variables)})

  return Method(name, requires=lambda ctx: (name,), rows=rows, stages=stages,
                models={name: Loadable(name)})


def fused_init(ctx) -> str:
  """The fused stage that Fusing, FusionDistill and the MoE student start from."""
  return f"fused/{ctx.config.fusion.init_batch_stats}"


SCRATCH = _method("scratch", "Scratch", None)
VANILLA = _method("vanilla", "Vanilla FT", "clean")
FUSING = _method("fusing", "Fusing", fused_init)
