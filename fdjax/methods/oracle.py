"""Oracle: each expert scored on its own degradation (and the clean model on clean
images); the experts' cross-degradation heatmap (paper Fig. 4)."""

from __future__ import annotations

import os

import numpy as np

from fdjax.distributed import write_once
from fdjax.eval import plots
from fdjax.methods.base import Loadable, Method, Output
from fdjax.study import stages


def _own_task(names, per_expert, clean) -> dict:
  """Expert i's entry of degradation i, the clean model's clean value, their average."""
  results = {d: r[d] for d, r in zip(names, per_expert)}
  results["clean"] = clean["clean"]
  results["avg"] = float(np.mean([results[d]["all"] for d in names]))
  return results


def _rows(runner) -> Output:
  ctx = runner.ctx
  experts = dict(zip(ctx.degradations, stages.experts(runner)))
  per_expert = [runner.evaluate(f"expert_{d}", v) for d, v in experts.items()]
  heatmap = [[r[d]["all"] for d in ctx.degradations] for r in per_expert]
  clean = runner.evaluate("clean", runner.get("clean"))
  results = _own_task(ctx.degradations, per_expert, clean)
  if all("per_image" in r for r in per_expert):  # each task's images, its own expert
    results["per_image"] = {d: r["per_image"][d] for d, r in zip(ctx.degradations, per_expert)}
  if "scoring" in clean:  # how each column was scored (rain on Y): the same for every model
    results["scoring"] = clean["scoring"]
  if "metrics" in clean:  # secondary metrics (SSIM), combined the same way
    results["metrics"] = {m: _own_task(ctx.degradations, [r["metrics"][m] for r in per_expert],
                                       clean["metrics"][m]) for m in clean["metrics"]}
  return Output([("Oracle", results)], artifacts={"heatmap": heatmap},
                models={"Oracle": lambda d: (None, experts[d])})  # each task's own expert


def _finalize(outputs, workdir: str, ctx) -> None:
  """expert_heatmap.png (each expert on each degradation), written by process 0 alone."""
  names = list(ctx.degradations)
  metric = ctx.task.metric
  heatmap = np.mean([o.artifacts["heatmap"] for o in outputs], axis=0)
  write_once(lambda: plots.plot_expert_heatmap(
      heatmap, names, names, os.path.join(workdir, "expert_heatmap.png"),
      title=f"Experts: {metric.label} over all levels ({metric.unit})", scale=metric.scale),
      "expert heatmap")


METHOD = Method("oracle", requires=lambda ctx: ("clean", *stages.expert_names(ctx)),
                rows=_rows, finalize=_finalize, models={"clean": Loadable("clean")},
                members=lambda ctx: (1 + len(ctx.degradations), 1))   # clean model + experts
