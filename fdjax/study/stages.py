"""The stages every consolidation method shares: the clean model, one expert per
degradation, and the weight-fused model (``fused/<bn_mode>``, see ``fused.py``).

``shared_graph(ctx)`` returns them as ``Stage`` nodes; methods add their own stages
(``fdjax.methods``) and the runner builds whatever a method asks for.
"""

from __future__ import annotations

import jax
import numpy as np

from fdjax import distill
from fdjax.study import fused
from fdjax.study.context import RunContext
from fdjax.study.runner import Stage
from fdjax.study.training import Recipe, train_stage
from fdjax.train.objectives import balance_uses, supervised_loss, task_balance


def base_shares(ctx: RunContext) -> int:
  """Images per step of the base stage in ``batch_size`` units: one per degradation when
  the task trains its base model on all of them (``task.base_on_all_tasks``), else 1."""
  return len(ctx.degradations) if ctx.task.base_on_all_tasks else 1


def clean_stage(ctx: RunContext) -> dict:
  """The base model, trained with the task loss on clean images (classification) or on
  the combined degradations, one share each (restoration: the all-in-one base)."""
  if not ctx.task.base_on_all_tasks:
    return train_stage(ctx, "clean", ctx.config.clean,
                       Recipe(supervised_loss(ctx.model, ctx.task)))
  degrade = ctx.plan.combined()
  loss_fn = supervised_loss(ctx.model, ctx.task, degrade, shares=base_shares(ctx),
                            balance=task_balance(ctx.config, "clean"))
  return train_stage(ctx, "clean", ctx.config.clean,
                     Recipe(loss_fn,
                            shares=base_shares(ctx), selection_degrade=degrade,
                            selection_shares=tuple(ctx.degradations),
                            pairs=ctx.degradations))


def has_batch_stats(ctx: RunContext) -> bool:
  """Whether the dense model has BatchNorm statistics (the restoration U-Nets do not)."""
  return bool(jax.tree.leaves(ctx.template_variables().get("batch_stats", {})))


def fusion_modes(ctx: RunContext, wanted) -> list[str]:
  """The fused stages to build for BatchNorm modes ``wanted``: all of them, or only
  ``fusion.init_batch_stats`` for a model without BatchNorm (every mode is then the
  same soup: one fused model, one ModelSoups row)."""
  return list(wanted) if has_batch_stats(ctx) else [ctx.config.fusion.init_batch_stats]


def expert_stage(ctx: RunContext, degradation: str, clean_variables: dict) -> dict:
  """One expert per degradation, from the clean model (ILIAC or the plain task loss).

  Every expert trains with the same compiled step (``expert_loss_any``): the degradation
  index and the frozen clean model reach it through ``frozen``."""
  cfg = ctx.config.experts
  if cfg.loss not in ("iliac", "ce"):
    raise ValueError(f"experts.loss must be 'iliac' or 'ce', got {cfg.loss!r}")
  frozen = {"degradation": np.int32(ctx.degradations.index(degradation)),
            "teacher": clean_variables if cfg.loss == "iliac" else None}
  recipe = Recipe(expert_loss_any(ctx), init=clean_variables, frozen=frozen,
                  selection_degrade=ctx.plan.sampler(degradation), pairs=(degradation,),
                  shared_step="experts")
  return train_stage(ctx, f"experts/{degradation}", cfg, recipe)


def expert_loss_any(ctx: RunContext):
  """The experts' loss for any degradation: ``loss_fn(params, batch_stats, batch, key,
  frozen)`` with ``frozen = {'degradation': int32 index into ctx.degradations, 'teacher':
  the clean model's variables (ILIAC) or None}``; the index picks the degradation with
  ``LevelPlan.switched``, so the traced program is the same for every expert."""
  cfg = ctx.config.experts
  switched = ctx.plan.switched()

  def loss_fn(params, batch_stats, batch, key, frozen):
    index = frozen["degradation"]
    degrade = lambda k, images: switched(k, images, index)
    if cfg.loss == "iliac":
      inner = distill.expert_loss(ctx.model, ctx.task, degrade=degrade,
                                  feature=ctx.config.distill_feature,
                                  cos_weight=cfg.cos_weight)
      return inner(params, batch_stats, batch, key, frozen["teacher"])
    return supervised_loss(ctx.model, ctx.task, degrade)(params, batch_stats, batch, key)

  return loss_fn


def expert_names(ctx: RunContext) -> tuple[str, ...]:
  return tuple(f"experts/{d}" for d in ctx.degradations)


def experts(runner) -> list[dict]:
  """The experts' variables, in ``config.degradations`` order."""
  return [runner.get(name) for name in expert_names(runner.ctx)]


def shared_graph(ctx: RunContext) -> dict[str, Stage]:
  """clean, experts/<degradation> and fused/<bn_mode> for every BatchNorm mode."""
  graph = {"clean": Stage("clean", (), lambda r: clean_stage(r.ctx), block="clean",
                          shares=base_shares(ctx),
                          uses=balance_uses(ctx.config) if ctx.task.base_on_all_tasks else (),
                          levels=None if ctx.task.base_on_all_tasks else ())}
  for d in ctx.degradations:
    graph[f"experts/{d}"] = Stage(
        f"experts/{d}", ("clean",),
        lambda r, d=d: expert_stage(r.ctx, d, r.get("clean")), block="experts",
        uses=("distill_feature",), levels=(d,),
        # only ILIAC's feature term reads it (expert_loss_any)
        ignores=() if ctx.config.experts.get("loss") == "iliac" else ("distill_feature",))
  for bn_mode in fused.BN_MODES:
    graph[f"fused/{bn_mode}"] = Stage(
        f"fused/{bn_mode}", expert_names(ctx),
        lambda r, bn_mode=bn_mode: fused.fused_stage(r.ctx, experts(r), bn_mode),
        uses=("fusion", "batch_size", "eval.seed", "eval_batch_size"),
        ignores=fused.unused_fields(ctx.config, bn_mode))
  return graph
