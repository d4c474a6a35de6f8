"""Evaluation of one model over the level plan, cached on disk per setting."""

from __future__ import annotations

import hashlib
import json
import os

import jax
from absl import logging

from fdjax.degradations.registry import grid_changes, revisions
from fdjax.distributed import write_once
from fdjax.eval import levels as levels_lib
from fdjax.eval.metric import predictor
from fdjax.eval.self_ensemble import configured, self_ensemble
from fdjax.json_files import read_cache, write_json
from fdjax.study.context import RunContext
from fdjax.train.integrity import tree_digest
from fdjax.train.progress import EvalProgress
from fdjax.train.stop import STOP

RESULTS_FORMAT = 2  # per_level as [level, value] pairs, 'all' = mean over levels


def variables_digest(variables) -> str:
  """sha256 (12 hex digits) of every leaf's bytes: a retrained model never reuses the
  cached results of the model it replaced."""
  return tree_digest(jax.device_get(variables))[:12]


class Evaluator:
  """``evaluate(name, variables, predict=None, model=None) -> results`` (see
  ``fdjax.eval.levels.evaluate_all``), cached as JSON under
  ``<seed dir>/eval/<settings>/<name>-<variables digest>.json``. The folder name holds
  every setting that changes the numbers (results format, levels, examples, keys, batch
  size, degradations, their revisions and the grids changed since 2026-12-07, ``_x<n>``
  with ``eval.self_ensemble``, the test sets' contents (classification: the test
  split's) and a task's opt-in metrics)
  and the file name the model's weights, so a cached result is only reused for the same
  evaluation of the same model (and the same scoring space: a task's
  ``scoring_labels``, e.g. rain on the Y channel). With ``eval.self_ensemble`` every
  predictor is wrapped by ``fdjax.eval.self_ensemble`` (the test outputs only)."""

  def __init__(self, ctx: RunContext):
    self.ctx = ctx
    e, cfg, plan = ctx.config.eval, ctx.config, ctx.plan
    ranges = "".join(f"_{n}{lo:g}-{hi:g}" for n, lo, hi in plan.ranges)
    settings = (f"v{RESULTS_FORMAT}_stride{plan.stride}"
                f"_n{f'{e.max_examples}bal' if e.max_examples else 'all'}_seed{plan.eval_seed}"
                f"_bs{cfg.eval_batch_size}_{'-'.join(plan.names)}{ranges}"
                + "".join(f"_{n}r{r}" for n, r in revisions(plan.names).items())
                + "".join(f"_{n}g{g}" for n, g in grid_changes(plan.names).items()))
    self.self_ensemble = configured(cfg)
    settings += f"_x{self.self_ensemble}" if self.self_ensemble else ""
    # Several processes keep no per-image scores (levels_lib.evaluate_all), so their
    # results lack per_image.csv's rows and the per-set columns: never served to one.
    settings += f"_p{jax.process_count()}" if jax.process_count() > 1 else ""
    tests = ctx.dataset.test_sets
    scoring = (ctx.task.scoring_labels(plan.names) if hasattr(ctx.task, "scoring_labels")
               else {})
    extra = list(getattr(ctx.task, "extra_metrics", ()))   # opt-in columns (restoration: NIQE)
    contents = "" if tests else f"_c{ctx.dataset.test.digest()[:10]}"   # classification
    settings += contents
    if tests or plan.explicit or scoring:  # test sets, explicit levels, scoring: digest
      described = {"explicit": plan.explicit,
                   "tests": {d: [t.name, t.real, len(t), t.sizes(), t.digest()]
                             for d, t in tests.items()},
                   **({"scoring": scoring} if scoring else {}),
                   **({"metrics": extra} if extra else {})}
      settings += "_t" + hashlib.sha256(json.dumps(described, sort_keys=True).encode()
                                        ).hexdigest()[:10]
    self.dir = os.path.join(ctx.workdir, "eval", settings)
    # A classification cache made before its folder held the test split's contents
    # (2026-12-07) is this test split's, once: renamed, not evaluated again.
    # Decided in process 0 alone (every process calls write_once: it is collective).
    if contents:
      before = self.dir.replace(contents, "")

      def adopt():
        if not os.path.exists(self.dir) and os.path.isdir(before):
          os.rename(before, self.dir)

      write_once(adopt, self.dir)

  def path(self, name: str, variables) -> str:
    """The cache file of result ``name`` for these weights (other per-model results, e.g.
    routing statistics, are cached the same way)."""
    return os.path.join(self.dir, f"{name}-{variables_digest(variables)}.json")

  def __call__(self, name: str, variables, predict=None, model=None) -> dict:
    path = self.path(name, variables)
    cached = read_cache(path)
    if cached is not None:
      return cached
    STOP.check()   # a stop request whose raise was lost (fdjax.train.stop)
    ctx = self.ctx
    logging.info("evaluating %s", name)
    if self.self_ensemble:
      predict = self_ensemble(predict or predictor(ctx.task, model or ctx.model),
                              self.self_ensemble)
    results = levels_lib.evaluate_all(
        ctx.task, variables, ctx.dataset.test_for("clean"), ctx.plan,
        batch_size=ctx.config.eval_batch_size, mesh=ctx.mesh, model=model or ctx.model,
        predict=predict, max_examples=ctx.config.eval.max_examples or None,
        test_sets=ctx.dataset.test_sets or None, per_image=True,
        progress=EvalProgress(name))

    # multi-process: process 0 writes, every process then sees it
    write_once(lambda: write_json(path, results), path)
    return results
