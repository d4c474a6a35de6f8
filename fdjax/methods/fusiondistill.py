"""FusionDistill (stage 4): the fused model distilled from the frozen experts on
combined degradations, ``alpha * task loss + sum_i gamma_i * (1 - cos(student, expert_i))``
(``fusiondistill.homogenize``: the per-degradation gradients combined by MUIRF-style
gradient homogenization, ``fdjax.moe.homogenize``, instead of summed)."""

from __future__ import annotations

from fdjax import distill
from fdjax.methods.base import Loadable, Method, Output, one_model
from fdjax.methods.finetune import fused_init
from fdjax.moe.homogenize import homogenized_recipe
from fdjax.moe.student import shared_param
from fdjax.study import stages
from fdjax.study.runner import Stage
from fdjax.study.training import Recipe, train_stage
from fdjax.train.objectives import balance_uses, task_balance
from fdjax.trees import stack_trees


def _stage(runner) -> dict:
  ctx = runner.ctx
  cfg, n = ctx.config.fusiondistill, len(ctx.degradations)
  degrade = ctx.plan.combined()
  loss_fn = distill.fusiondistill_loss(ctx.model, ctx.task, degrade=degrade, num_experts=n,
                                       feature=ctx.config.distill_feature, alpha=cfg.alpha,
                                       gammas=cfg.gamma,
                                       balance=task_balance(ctx.config, "fusiondistill"),
                                       output_weight=cfg.output_weight)
  recipe = Recipe(loss_fn, init=runner.get(fused_init(ctx)),
                  frozen=stack_trees(stages.experts(runner)), shares=n,
                  selection_degrade=degrade, selection_shares=tuple(ctx.degradations),
                  pairs=ctx.degradations, **homogenized(cfg.homogenize, n))
  return train_stage(ctx, "fusiondistill", cfg, recipe)


def homogenized(mode: str, num_tasks: int) -> dict:
  """The stage's gradient homogenization (``fdjax.moe.homogenize``): a MEASNet's expert
  MLPs (``.../_moe/experts/...``) are task-specific, as in the MoE student; every other
  parameter is shared."""
  return homogenized_recipe(mode, num_tasks, shared=shared_param)


def _stages(ctx):
  return {"fusiondistill": Stage("fusiondistill", (fused_init(ctx), *stages.expert_names(ctx)),
                                 _stage, block="fusiondistill", shares=len(ctx.degradations),
                                 uses=("distill_feature", *balance_uses(ctx.config)))}


def _rows(runner) -> Output:
  variables = runner.get("fusiondistill")
  return Output([("FusionDistill", runner.evaluate("fusiondistill", variables))],
                models={"FusionDistill": one_model(variables)})


METHOD = Method("fusiondistill", requires=lambda ctx: ("fusiondistill",), rows=_rows,
                stages=_stages, models={"fusiondistill": Loadable("fusiondistill")})
