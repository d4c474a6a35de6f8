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
  records, heatmaps = [], []
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
    seed_records, heatmap = run_seed(ctx, methods)
    records += seed_records
    if heatmap is not None:
      heatmaps.append(heatmap)
  report.write_reports(records, workdir)
  plots.plot_accuracy_vs_level(records, workdir)
  if heatmaps:
    names = parse_list(config.degradations)
    plots.plot_expert_heatmap(np.mean(heatmaps, axis=0), names, names,
                              os.path.join(workdir, "expert_heatmap.png"))
  table = report.format_table(records)
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
  records, heatmap = [], None
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
  return records, heatmap


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
    logits = jax.vmap(lambda v: model.apply(v, x, train=False)[0])(stacked)
    labels = ensemble_predict(logits)
    return jax.nn.one_hot(labels, logits.shape[-1])

  return predict


class _Evaluator:
  """Acc(All) of one model, cached as JSON under ``<seed dir>/eval/<name>.json``."""

  def __init__(self, ctx: stages.RunContext):
    self.ctx = ctx
    self.dir = os.path.join(ctx.workdir, "eval")
    os.makedirs(self.dir, exist_ok=True)

  def __call__(self, name: str, variables, predict=None) -> dict:
    path = os.path.join(self.dir, f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        return _float_keys(json.load(f))
    cfg = self.ctx.config
    logging.info("evaluating %s", name)
    results = levels_lib.evaluate_all(
        self.ctx.model, variables, self.ctx.dataset.test, self.ctx.degradations,
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
