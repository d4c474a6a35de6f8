"""FusionDistill-MoE: FusionDistill with a mixture-of-experts student (``fdjax.moe``),
one row per K of ``moe.ks``, with parameter and inference-cost columns (beside the
dense FusionDistill's) and router usage (``router_usage.md``, ``router_usage_k<K>.png``)."""

from __future__ import annotations

import os

import numpy as np

from fdjax import moe
from fdjax.eval import levels as levels_lib
from fdjax.eval import plots
from fdjax.methods.base import Loadable, Method, Output
from fdjax.methods.finetune import fused_init
from fdjax.moe import usage as usage_lib
from fdjax.moe.student import STAGE, moe_student, recipe_parts
from fdjax.study import stages
from fdjax.study.runner import Stage
from fdjax.study.training import Recipe, train_stage


def parse_ints(text) -> list[int]:
  try:
    return [int(s) for s in str(text).split(",") if s.strip()]
  except ValueError as e:
    raise ValueError(f"expected comma-separated integers, got {text!r}") from e


def _stage(runner):
  ctx = runner.ctx
  parts = recipe_parts(ctx, runner.get(fused_init(ctx)), stages.experts(runner))
  return parts["model"], train_stage(ctx, STAGE, ctx.config.moe, Recipe(**parts))


def _stages(ctx):
  return {STAGE: Stage(STAGE, (fused_init(ctx), *stages.expert_names(ctx)), _stage,
                       block="moe", shares=len(ctx.degradations), uses=("distill_feature",))}


def cost(ctx, model, variables, k: int | None = None) -> dict:
  """Parameters, active parameters and XLA inference FLOPs per image of ``model``."""
  def apply(m):  # the network itself, on model inputs (the cost of no preprocessing)
    return lambda v, x: m.apply(v, x, train=False)[0]

  shape = (1, *ctx.dataset.image_shape)
  num_experts = len(ctx.degradations) if k is not None else None
  result = moe.model_cost(apply(model), variables, shape, num_experts, k)
  if k is not None and getattr(model, "dispatch", "dense") == "dense":
    result["sparse_flops"] = moe.inference_flops(apply(model.clone(dispatch="sparse")),
                                                 variables, shape)
  return result


def cost_columns(result: dict, dense: dict) -> dict:
  columns = {"params": result["params"], "active params": result["active_params"],
             "FLOPs/img (rel.)": round(result["flops"] / dense["flops"], 2)}
  if "sparse_flops" in result:
    columns["sparse FLOPs/img (rel.)"] = round(result["sparse_flops"] / dense["flops"], 2)
  return columns


def _rows(runner) -> Output:
  ctx = runner.ctx
  dense_variables = runner.get(fused_init(ctx))
  dense = cost(ctx, ctx.model, dense_variables)
  out = Output(extra={"FusionDistill": cost_columns(dense, dense)},
               artifacts={"usage": []})
  trained, variables = runner.get(STAGE)
  cfg = ctx.config
  split = levels_lib.subset(ctx.dataset.test, cfg.eval.max_examples or None)
  for k in parse_ints(cfg.moe.ks):
    model = trained.clone(k=k)
    row = f"FusionDistill-MoE (K={k})"
    out.rows.append((row, runner.evaluate(f"fusiondistill_moe_k{k}", variables, model=model)))
    out.extra[row] = cost_columns(cost(ctx, model, variables, k=k), dense)
    out.artifacts["usage"].append(
        (row, ctx.seed, usage_lib.router_usage(ctx.task, model, variables, split, ctx.plan,
                                               batch_size=cfg.eval_batch_size)))
  return out


def _finalize(outputs, workdir: str, ctx) -> None:
  """router_usage.md (per row and seed) and router_usage_k<K>.png (mean over seeds)."""
  names = list(ctx.degradations)
  experts = [f"{i}:{n}" for i, n in enumerate(names)]
  lines = ["# Router usage: fraction of test images (or pixels) whose top expert is each "
           "expert, per test degradation (degraded levels only)\n"]
  by_row: dict = {}
  for row, seed, matrix in (u for o in outputs for u in o.artifacts["usage"]):
    lines += [f"## {row}, seed {seed}\n", usage_lib.format_usage(matrix, names, experts), ""]
    by_row.setdefault(row, []).append(matrix)
  diagonal = {row: float(np.mean([np.trace(m) / len(names) for m in ms]))
              for row, ms in by_row.items()}
  lines += ["Share routed to the matching expert (mean of the diagonal): "
            + ", ".join(f"{row} {100 * d:.1f}%" for row, d in diagonal.items()), ""]
  with open(os.path.join(workdir, "router_usage.md"), "w") as f:
    f.write("\n".join(lines))
  for row, matrices in by_row.items():
    k = row.split("K=")[-1].rstrip(")")
    plots.plot_expert_heatmap(np.mean(matrices, axis=0), names, experts,
                              os.path.join(workdir, f"router_usage_k{k}.png"),
                              title=f"{row}: router usage (%)", xlabel="expert",
                              ylabel="test degradation")


def _build(config, data_spec, k):
  return moe_student(config, data_spec.num_classes, k or config.moe.train_k)


METHOD = Method("fusiondistill_moe", requires=lambda ctx: (STAGE,), rows=_rows, stages=_stages,
                finalize=_finalize, models={"fusiondistill_moe": Loadable(STAGE, _build)})
