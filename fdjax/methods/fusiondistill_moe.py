"""FusionDistill-MoE: FusionDistill with a mixture-of-experts student (``fdjax.moe``),
one row per K of ``moe.ks``, with parameter, inference-cost and routing-accuracy columns
(beside the dense FusionDistill's) and router usage and routing accuracy
(``router_usage.md``, ``router_usage_k<K>.png``, ``router_accuracy.png``).

The router is measured per K row (``routing``, cached beside the evaluation results): a
router downstream of another routed block (two routed levels, or two blocks at a routed
level, with routers that see the block's input) sees that block's K-dependent mixture,
so its decisions change with K."""

from __future__ import annotations

import os

import numpy as np

from fdjax import moe
from fdjax.config import parse_ints
from fdjax.distributed import write_once
from fdjax.eval import levels as levels_lib
from fdjax.eval import plots
from fdjax.eval.inference import padded_size
from fdjax.json_files import read_cache, replaced, write_json
from fdjax.methods.base import Loadable, Method, Output, one_model
from fdjax.methods.finetune import fused_init
from fdjax.moe import usage as usage_lib
from fdjax.moe.student import STAGE, moe_student, recipe_parts
from fdjax.study import stages
from fdjax.study.runner import Stage
from fdjax.study.training import Recipe, train_stage
from fdjax.train.objectives import balance_uses


def _stage(runner):
  ctx = runner.ctx
  parts = recipe_parts(ctx, runner.get(fused_init(ctx)), stages.experts(runner))
  return parts["model"], train_stage(ctx, STAGE, ctx.config.moe, Recipe(**parts))


def _stages(ctx):
  return {STAGE: Stage(STAGE, (fused_init(ctx), *stages.expert_names(ctx)), _stage,
                       block="moe", shares=len(ctx.degradations),
                       uses=("distill_feature", *balance_uses(ctx.config), *pairs_uses(ctx)),
                       ignores=("block.ks",))}   # the K rows it is reported at


def pairs_uses(ctx) -> tuple[str, ...]:
  """``('data.train_pairs',)`` when the run has real training pairs: the student trains
  on them since 2026-12-02 (before, on synthetic inputs only), so a student trained
  without them is not reused."""
  return ("data.train_pairs",) if ctx.dataset.train_pairs else ()


def cost_shape(ctx, model) -> tuple[int, int, int, int]:
  """``(1, H, W, C)``: one image of the data set's shape (the training tiles' for
  restoration) padded up to ``model``'s stride (a U-Net runs on multiples of it)."""
  stride = int(getattr(model, "stride", 1))
  h, w, c = ctx.dataset.image_shape
  return (1, padded_size(h, stride), padded_size(w, stride), c)


def cost(ctx, model, variables, k: int | None = None) -> dict:
  """Parameters, active parameters and XLA inference FLOPs per image of ``model``, run
  at ``cost_shape``."""
  def apply(m):  # the network itself, on model inputs (the cost of no preprocessing)
    return lambda v, x: m.apply(v, x, train=False)[0]

  shape = cost_shape(ctx, model)
  num_experts = len(ctx.degradations) if k is not None else None
  result = moe.model_cost(apply(model), variables, shape, num_experts, k)
  if k is not None and getattr(model, "dispatch", None) == "dense":   # the ResNet student
    result["sparse_flops"] = moe.inference_flops(apply(model.clone(dispatch="sparse")),
                                                 variables, shape)
  return result


def cost_columns(result: dict, dense: dict) -> dict:
  """A MoE row's cost columns from ``cost``'s dicts of the row's model (``result``) and
  the dense model (``dense``): parameters, active parameters and inference FLOPs per
  image relative to the dense model's (sparse dispatch's too, when measured)."""
  columns = {"params": result["params"], "active params": result["active_params"],
             "FLOPs/img (rel.)": round(result["flops"] / dense["flops"], 2)}
  if "sparse_flops" in result:
    columns["sparse FLOPs/img (rel.)"] = round(result["sparse_flops"] / dense["flops"], 2)
  return columns


ROUTING_COLUMN = "routing acc. (non-clean)"


def routing(runner, model, variables, per_image: bool = False) -> usage_lib.RoutingStats:
  """The MoE student's routing statistics on the evaluation images (every level of the
  plan, evaluation keys) at ``model.k``, cached beside the evaluation results and keyed
  by the student's weights (and K) like them. ``per_image``: one decision per image (the
  routed-experts row's; the same statistics when the student routes per image)."""
  ctx = runner.ctx
  per_image = per_image and getattr(model, "routing", "pixel") != "image"
  path = runner.evaluate.path(f"routing_{STAGE}_k{model.k}" + ("_per_image" if per_image
                                                                else ""), variables)
  saved = read_cache(path)
  if saved is not None:
    return usage_lib.RoutingStats(tuple(saved["names"]), saved["levels"],
                                  [np.asarray(c, np.float64) for c in saved["counts"]],
                                  [np.asarray(h, np.float64) for h in saved["entropy"]])
  first = ctx.config.eval.max_examples or None   # as the evaluation: the same images
  split = levels_lib.subset(ctx.dataset.test_for("clean"), first)
  tests = {n: levels_lib.subset(t, first) for n, t in ctx.dataset.test_sets.items()}
  stats = usage_lib.routing_stats(ctx.task, model, variables, split, ctx.plan,
                                  batch_size=ctx.config.eval_batch_size, test_sets=tests,
                                  per_image=per_image)
  write_once(lambda: write_json(path, {"names": list(stats.names), "levels": stats.levels,
                                       "counts": [c.tolist() for c in stats.counts],
                                       "entropy": [h.tolist() for h in stats.entropy]}),
             "routing statistics")
  return stats


def routing_column(stats: usage_lib.RoutingStats) -> dict:
  non_clean = usage_lib.routing_accuracy(stats)["non_clean"]
  return {ROUTING_COLUMN: None if non_clean is None else round(100 * non_clean, 1)}


def _rows(runner) -> Output:
  ctx = runner.ctx
  dense_variables = runner.get(fused_init(ctx))
  dense = cost(ctx, ctx.model, dense_variables)
  out = Output(extra={"FusionDistill": cost_columns(dense, dense)})
  trained, variables = runner.get(STAGE)
  per_row = []
  for k in parse_ints(ctx.config.moe.ks, "moe.ks"):
    model = trained.clone(k=k)
    row = f"FusionDistill-MoE (K={k})"
    out.rows.append((row, runner.evaluate(f"fusiondistill_moe_k{k}", variables, model=model)))
    out.models[row] = one_model(variables, model)
    stats = routing(runner, model, variables)
    out.extra[row] = {**cost_columns(cost(ctx, model, variables, k=k), dense),
                      **routing_column(stats)}
    per_row.append((row, k, stats))
  out.artifacts["routing"] = (ctx.seed, per_row)
  return out


def _level(level: float) -> str:
  return "real" if np.isnan(level) else f"{level:g}"   # nan: a real test set's inputs


def _finalize(outputs, workdir: str, ctx) -> None:
  """The router files (``_write_router_files``), written by process 0 alone."""
  write_once(lambda: _write_router_files(outputs, workdir, ctx), "router usage files")


def _write_router_files(outputs, workdir: str, ctx) -> None:
  """router_usage.md (per seed and K row: usage, routing accuracy, gate entropy),
  router_usage_k<K>.png (per K, means over seeds) and router_accuracy.png (per K, means
  over seeds)."""
  names = list(ctx.degradations)
  experts = [f"{i}:{n}" for i, n in enumerate(names)]
  lines = ["# Router usage and routing accuracy\n",
           "Per K row: an image's (or pixel's) top expert is the largest of the softmax "
           "gates. Usage: fraction of test images (or pixels) whose top "
           "expert is each expert, per test degradation (degraded levels only). Routing "
           "accuracy: the share whose top expert is their own degradation's expert "
           "(expert i = degradation i), near-clean levels (ambiguous by nature) apart. "
           "Gate entropy: mean entropy of the softmax gates before top-K (degraded "
           "levels).\n"]
  matrices: dict[int, list] = {}
  accuracies: dict[int, list] = {}
  labels: dict[int, str] = {}
  for seed, per_row in (o.artifacts["routing"] for o in outputs):
    for row, k, stats in per_row:
      matrix, accuracy = usage_lib.usage(stats), usage_lib.routing_accuracy(stats)
      entropy = usage_lib.gate_entropy(stats)
      lines += [f"## {row}, seed {seed}\n",
                usage_lib.format_usage(matrix, names, experts), "",
                usage_lib.format_accuracy(accuracy, entropy, names), "",
                "Routing accuracy per level (%): " + "; ".join(
                    f"{n} " + ", ".join(f"{_level(lvl)}: {100 * a:.0f}"
                                        for lvl, a in accuracy[n]["per_level"])
                    for n in names), ""]
      matrices.setdefault(k, []).append(matrix)
      accuracies.setdefault(k, []).append(
          [[accuracy[n][b] if accuracy[n][b] is not None else np.nan
            for b in ("near_clean", "non_clean")] for n in names])
      labels[k] = row
  for k, row in labels.items():
    diagonal = float(np.mean([np.trace(m) / len(names) for m in matrices[k]]))
    lines += [f"{row}: share routed to the matching expert (mean of the diagonal, over "
              f"seeds): {100 * diagonal:.1f}%", ""]
    plots.plot_expert_heatmap(np.mean(matrices[k], axis=0), names, experts,
                              os.path.join(workdir, f"router_usage_k{k}.png"),
                              title=f"{row}: router usage (%)", xlabel="expert",
                              ylabel="test degradation")
  with replaced(os.path.join(workdir, "router_usage.md")) as f:
    f.write("\n".join(lines))
  columns = [f"K={k} {b}" for k in labels for b in ("near-clean", "non-clean")]
  plots.plot_expert_heatmap(
      np.concatenate([np.mean(accuracies[k], axis=0) for k in labels], axis=1), names,
      columns, os.path.join(workdir, "router_accuracy.png"),
      title="MoE router: routing accuracy (%)", xlabel="K, levels", ylabel="test degradation")


def _build(config, data_spec, k):
  return moe_student(config, data_spec, k or config.moe.train_k)


METHOD = Method("fusiondistill_moe", requires=lambda ctx: (STAGE,), rows=_rows, stages=_stages,
                finalize=_finalize, models={"fusiondistill_moe": Loadable(STAGE, _build)})
