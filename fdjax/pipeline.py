"""The main job: the FusionDistill study. For each seed, train (or reuse) the stages
the requested methods need, evaluate every method with Acc(All), then write the
tables and figures for all seeds.

Methods (rows of the results table) and the stages they need:

    oracle         clean (clean column), experts      each expert on its own degradation
    ensemble       experts                            plurality vote, softmax-sum tie-break
    scratch        scratch                            random init, combined degradations, SGD
    vanilla        clean, vanilla                     clean model fine-tuned on combined
    modelsoups     experts, fused/<bn>                one row per BatchNorm variant
    fusing         experts, fused, fusing             fused model fine-tuned with CE
    fusiondistill  experts, fused, fusiondistill      fused model distilled from the experts
    fusiondistill_moe  experts, fused, fusiondistill_moe   mixture-of-experts student,
                                                      one row per K in config.moe.ks
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from fdjax import stages
from fdjax.config import METHODS
from fdjax.eval import levels as levels_lib
from fdjax.eval import plots, report
from fdjax.distill import apply_experts
from fdjax.models import normalize

MODEL_SELECTION_NOTE = {
    "last": "last checkpoint of each stage (no model selection)",
    "val": "best epoch by accuracy on the held-out validation split (never the test set)",
}


def parse_list(text: str) -> list[str]:
  return [t.strip() for t in str(text).split(",") if t.strip()]


def parse_methods(text: str) -> list[str]:
  methods = parse_list(text)
  unknown = [m for m in methods if m not in METHODS]
  if unknown or not methods:
    raise ValueError(f"unknown method(s) {unknown} in config.methods={text!r}; "
                     f"choose from {','.join(METHODS)}")
  return methods


def parse_seeds(text) -> list[int]:
  try:
    return [int(s) for s in parse_list(text)]
  except ValueError as e:
    raise ValueError(f"config.seeds must be comma-separated integers, got {text!r}") from e


def run(config: ml_collections.ConfigDict, workdir: str) -> list[report.Record]:
  """Runs the study described by ``config`` in ``workdir``; returns the result records."""
  methods = parse_methods(config.methods)
  seeds = parse_seeds(config.seeds)
  os.makedirs(workdir, exist_ok=True)
  _write_config(config, workdir)
  records, heatmaps, extra, usages = [], [], {}, []
  dataset = None
  for seed in seeds:
    if dataset is None or config.data.validation_fraction:
      dataset = stages.load_dataset(config, seed)  # the validation split depends on the seed
    ctx = stages.make_context(config, os.path.join(workdir, f"seed_{seed}"), seed, dataset)
    _write_run_info(dataset, workdir)
    logging.info("seed %d: %s, %d train / %d val / %d test, %d classes, %d device(s)", seed,
                 dataset.name, len(dataset.train),
                 len(dataset.validation) if dataset.validation else 0, len(dataset.test),
                 dataset.num_classes, ctx.mesh.size)
    seed_records, heatmap, seed_extra, seed_usage = run_seed(ctx, methods)
    records += seed_records
    extra.update(seed_extra)
    usages += seed_usage
    if heatmap is not None:
      heatmaps.append(heatmap)
  report.write_reports(records, workdir, extra=extra or None)
  plots.plot_accuracy_vs_level(records, workdir)
  if heatmaps:
    names = parse_list(config.degradations)
    plots.plot_expert_heatmap(np.mean(heatmaps, axis=0), names, names,
                              os.path.join(workdir, "expert_heatmap.png"))
  _write_router_usage(usages, parse_list(config.degradations), workdir)
  table = report.format_table(records, extra=extra or None)
  note = f"Model selection: {MODEL_SELECTION_NOTE[config.selection]}."
  with open(os.path.join(workdir, "results.md"), "a") as f:
    f.write(f"\n{note}\n")
  print(table)
  print(note)
  return records


def run_seed(ctx: stages.RunContext, methods: list[str]):
  """Trains what ``methods`` need for one seed and evaluates them (results cached)."""
  cfg = ctx.config
  needs_experts = any(m in methods for m in ("oracle", "ensemble", "modelsoups", "fusing",
                                             "fusiondistill"))
  clean = stages.clean_stage(ctx) if needs_experts or {"oracle", "vanilla"} & set(methods) else None
  experts = [stages.expert_stage(ctx, d, clean) for d in ctx.degradations] if needs_experts else []
  evaluate = _Evaluator(ctx)
  records, heatmap, extra, usages = [], None, {}, []
  for method in methods:
    if method == "oracle":
      per_expert = [evaluate(f"expert_{d}", v) for d, v in zip(ctx.degradations, experts)]
      heatmap = [[r[d]["acc_all"] for d in ctx.degradations] for r in per_expert]
      oracle = {d: r[d] for d, r in zip(ctx.degradations, per_expert)}
      oracle["clean"] = evaluate("clean", clean)["clean"]
      oracle["avg"] = float(np.mean([oracle[d]["acc_all"] for d in ctx.degradations]))
      records.append(_record("Oracle", ctx.seed, oracle))
    elif method == "ensemble":
      predict = _ensemble_predict(ctx)
      records.append(_record("Ensemble", ctx.seed, evaluate(
          "ensemble", _stack(experts), predict=predict)))
    elif method in ("scratch", "vanilla"):
      init = clean if method == "vanilla" else None
      variables = stages.combined_ce_stage(ctx, method, init)
      records.append(_record({"scratch": "Scratch", "vanilla": "Vanilla FT"}[method], ctx.seed,
                             evaluate(method, variables)))
    elif method == "modelsoups":
      for bn_mode in parse_list(cfg.fusion.modelsoups_variants):
        fused = stages.fused_stage(ctx, experts, bn_mode)
        records.append(_record(f"ModelSoups (BN {bn_mode})", ctx.seed,
                               evaluate(f"modelsoups_{bn_mode}", fused)))
    elif method in ("fusing", "fusiondistill"):
      fused = stages.fused_stage(ctx, experts, cfg.fusion.init_batch_stats)
      if method == "fusing":
        variables = stages.combined_ce_stage(ctx, "fusing", fused)
      else:
        variables = stages.fusiondistill_stage(ctx, fused, experts)
      records.append(_record({"fusing": "Fusing", "fusiondistill": "FusionDistill"}[method],
                             ctx.seed, evaluate(method, variables)))
    elif method == "fusiondistill_moe":
      fused = stages.fused_stage(ctx, experts, cfg.fusion.init_batch_stats)
      dense_cost = _cost(ctx, ctx.model, clean or fused)
      extra.setdefault("FusionDistill", _cost_columns(dense_cost, dense_cost))
      trained_model, variables = stages.fusiondistill_moe_stage(ctx, fused, experts)
      for k in parse_ints(cfg.moe.ks):
        model = trained_model.clone(k=k)
        row = f"FusionDistill-MoE (K={k})"
        records.append(_record(row, ctx.seed, evaluate(f"fusiondistill_moe_k{k}", variables,
                                                       model=model)))
        extra[row] = _cost_columns(_cost(ctx, model, variables, k=k), dense_cost)
        usages.append((row, ctx.seed, _router_usage(ctx, model, variables)))
  return records, heatmap, extra, usages


def parse_ints(text) -> list[int]:
  try:
    return [int(s) for s in parse_list(text)]
  except ValueError as e:
    raise ValueError(f"expected comma-separated integers, got {text!r}") from e


def _cost(ctx: stages.RunContext, model, variables, k: int | None = None) -> dict:
  """Parameters, active parameters and XLA inference FLOPs per image of ``model``."""
  from fdjax import moe

  apply = lambda v, x: model.apply(v, x, train=False)[0]  # noqa: E731
  num_experts = len(ctx.degradations) if k is not None else None
  cost = moe.model_cost(apply, variables, (1, *ctx.dataset.image_shape), num_experts, k)
  if k is not None and getattr(model, "dispatch", "dense") == "dense":
    sparse = model.clone(dispatch="sparse")
    cost["sparse_flops"] = moe.inference_flops(
        lambda v, x: sparse.apply(v, x, train=False)[0], variables, (1, *ctx.dataset.image_shape))
  return cost


def _cost_columns(cost: dict, dense: dict) -> dict:
  columns = {"params": cost["params"], "active params": cost["active_params"],
             "FLOPs/img (rel.)": round(cost["flops"] / dense["flops"], 2)}
  if "sparse_flops" in cost:
    columns["sparse FLOPs/img (rel.)"] = round(cost["sparse_flops"] / dense["flops"], 2)
  return columns


def _router_usage(ctx: stages.RunContext, model, variables):
  from fdjax.moe import usage

  cfg = ctx.config
  split = levels_lib.subset(ctx.dataset.test, cfg.eval.max_examples or None)
  return usage.router_usage(model, variables, split, ctx.degradations,
                            normalization=cfg.data.normalization,
                            batch_size=cfg.eval_batch_size,
                            level_stride=cfg.eval.level_stride, seed=cfg.eval.seed)


def _write_router_usage(usages, names: list[str], workdir: str) -> None:
  """router_usage.md (per row and seed) and router_usage_<K>.png (mean over seeds)."""
  if not usages:
    return
  from fdjax.moe import usage as usage_lib

  experts = [f"{i}:{n}" for i, n in enumerate(names)]
  lines = ["# Router usage: fraction of test images (or pixels) whose top expert is each "
           "expert, per test degradation (degraded levels only)\n"]
  by_row: dict = {}
  for row, seed, matrix in usages:
    lines += [f"## {row}, seed {seed}\n", usage_lib.format_usage(matrix, names, experts), ""]
    by_row.setdefault(row, []).append(matrix)
  diagonal = {row: float(np.mean([np.trace(m) / len(names) for m in ms]))
              for row, ms in by_row.items()}
  lines += [f"Share routed to the matching expert (mean of the diagonal): "
            + ", ".join(f"{row} {100 * d:.1f}%" for row, d in diagonal.items()), ""]
  with open(os.path.join(workdir, "router_usage.md"), "w") as f:
    f.write("\n".join(lines))
  for row, matrices in by_row.items():
    k = row.split("K=")[-1].rstrip(")")
    plots.plot_expert_heatmap(np.mean(matrices, axis=0), names, experts,
                              os.path.join(workdir, f"router_usage_k{k}.png"),
                              title=f"{row}: router usage (%)", xlabel="expert",
                              ylabel="test degradation")


def _record(method: str, seed: int, results: dict) -> report.Record:
  return (method, seed, results)


def _stack(variables_list):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *variables_list)


def _ensemble_predict(ctx: stages.RunContext):
  """Clean predictor for stacked experts: one-hot of the plurality vote."""
  from fdjax.fusion import ensemble_predict

  model, normalization = ctx.model, ctx.config.data.normalization

  def predict(stacked, images):
    x = normalize(images, normalization)
    n = jax.tree.leaves(stacked)[0].shape[0]
    logits = apply_experts(lambda v, xi: model.apply(v, xi, train=False)[0], stacked,
                           jnp.broadcast_to(x, (n, *x.shape)))
    labels = ensemble_predict(logits)
    return jax.nn.one_hot(labels, logits.shape[-1])

  return predict


class _Evaluator:
  """Acc(All) of one model, cached as JSON under ``<seed dir>/eval/<settings>/<name>.json``.

  The folder name holds every setting that changes the numbers (levels, examples, keys,
  batch size, degradations), so a cached result is only reused for the same evaluation.
  """

  def __init__(self, ctx: stages.RunContext):
    self.ctx = ctx
    e, cfg = ctx.config.eval, ctx.config
    settings = (f"stride{e.level_stride}_n{f'{e.max_examples}bal' if e.max_examples else 'all'}"
                f"_seed{e.seed}"
                f"_bs{cfg.eval_batch_size}_{'-'.join(ctx.degradations)}")
    self.dir = os.path.join(ctx.workdir, "eval", settings)
    os.makedirs(self.dir, exist_ok=True)

  def __call__(self, name: str, variables, predict=None, model=None) -> dict:
    path = os.path.join(self.dir, f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        return _float_keys(json.load(f))
    cfg = self.ctx.config
    logging.info("evaluating %s", name)
    results = levels_lib.evaluate_all(
        model or self.ctx.model, variables, self.ctx.dataset.test, self.ctx.degradations,
        normalization=cfg.data.normalization, batch_size=cfg.eval_batch_size, mesh=self.ctx.mesh,
        level_stride=cfg.eval.level_stride, max_examples=cfg.eval.max_examples or None,
        seed=cfg.eval.seed, predict=predict)
    with open(path, "w") as f:
      json.dump(results, f)
    return results


def _float_keys(results: dict) -> dict:
  """JSON turns level keys into strings; turn them back into floats."""
  for value in results.values():
    if isinstance(value, dict) and "per_level" in value:
      value["per_level"] = {float(k): v for k, v in value["per_level"].items()}
  return results


def _write_run_info(dataset, workdir: str) -> None:
  """What ``fdjax.restore`` needs besides the config to rebuild the model."""
  with open(os.path.join(workdir, "run.json"), "w") as f:
    json.dump({"dataset": dataset.name, "num_classes": dataset.num_classes,
               "image_shape": list(dataset.image_shape),
               "class_names": list(dataset.class_names)}, f, indent=2)


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
