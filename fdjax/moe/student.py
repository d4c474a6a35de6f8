"""The mixture-of-experts student of FusionDistill-MoE: its module from the config,
its training stage, and which parameters gradient homogenization treats as shared.

The student's experts start from the per-degradation models and its shared parts from
the fused model; it trains with the FusionDistill loss plus the router's balance loss
(optionally with MUIRF gradient homogenization), with top-``moe.train_k`` routing: with
K=1 the single kept gate is renormalised to exactly 1 and the router would learn from
the balance loss alone. The variables do not depend on K, so one trained student is
evaluated at every K of ``moe.ks`` with ``model.clone(k=K)``.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from fdjax import distill
from fdjax.moe.homogenize import homogenize, per_task_value_and_grad
from fdjax.moe.init import moe_variables
from fdjax.moe.model import moe_resnet
from fdjax.tasks.classification import model_dtype
from fdjax.trees import stack_trees

STAGE = "fusiondistill_moe"


def moe_student(config: ml_collections.ConfigDict, num_classes: int, k: int):
  """The student of ``config.moe`` (one expert per degradation of ``config.degradations``)
  with top-``k`` routing."""
  cfg = config.moe
  names = [n for n in config.degradations.split(",") if n.strip()]
  return moe_resnet(config.model.depth, num_classes, config.model.head,
                    num_experts=len(names), k=k,
                    moe_stages=tuple(s.strip() for s in cfg.stages.split(",") if s.strip()),
                    routing=cfg.routing, dispatch=cfg.dispatch, num_prompts=cfg.num_prompts,
                    channel_sharing=cfg.channel_sharing, expert_loop=cfg.expert_loop,
                    dtype=model_dtype(config.model.dtype))


def shared_param(path: str) -> bool:
  """False for the stacked expert copies ('.../stage3_moe/experts/...'), True otherwise."""
  parts = path.split("/")
  return not any(a.endswith("_moe") and b == "experts" for a, b in zip(parts, parts[1:]))


def recipe_parts(ctx, fused_variables: dict, expert_variables: list[dict]) -> dict:
  """``(model, Recipe fields)`` of the student's stage for run context ``ctx``."""
  cfg, n = ctx.config.moe, len(ctx.degradations)
  model = moe_student(ctx.config, ctx.dataset.num_classes, cfg.train_k)
  init = moe_variables(model, fused_variables, expert_variables,
                       jax.random.fold_in(jax.random.PRNGKey(ctx.seed), 1000 + cfg.train_k),
                       ctx.dataset.image_shape)
  degrade = ctx.plan.combined()
  loss_fn = distill.fusiondistill_loss(
      model, ctx.task, degrade=degrade, num_experts=n, feature=ctx.config.distill_feature,
      alpha=cfg.alpha, gammas=[cfg.gamma] * n, teacher_model=ctx.model,
      aux_loss_weight=cfg.balance_weight)
  parts = dict(loss_fn=loss_fn, init=init, frozen=stack_trees(expert_variables), shares=n,
               selection_degrade=degrade, model=model)
  if cfg.homogenize != "none":
    parts["grad_fn"] = per_task_value_and_grad(n)
    parts["wrap_tx"] = lambda tx: optax.chain(homogenize(cfg.homogenize, shared=shared_param),
                                              tx)
  return parts
