"""EA-Adam (Sun et al., TIP 2024) for classification: a population of P models, one per
preference between the objectives (clean images and each degradation), trained by
one vmapped step with per-tensor normalised objective gradients, evolved after every
epoch (SBX, Gaussian mutation, MOEA/D with the normalised Tchebycheff function),
then merged. Every member starts from the clean model; member 0 (clean only) is
frozen when ``ea_adam.freeze_first``.

Stage ``ea_adam`` (config block ``ea_adam``): the stacked members under
``ea_adam/variables``, the last Pareto report in ``ea_adam/pareto.json`` (per epoch in
``metrics.jsonl``). Rows: the best single member (highest mean validation metric over
the objectives), the uniform average of the members and their validation-weighted
average (weights = mean validation metric). ``ea_adam/merged.json`` holds the validation
Pareto report of the members with the two averages beside them.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import optax

from fdjax import fusion
from fdjax.methods.base import Method, Output
from fdjax.population.evolution import EvolutionConfig, init_evolution
from fdjax.population.fitness import member_metrics, scorer
from fdjax.population.gradients import freeze_members, population_grad_fn
from fdjax.population.hook import evolution_hook
from fdjax.population.model import StackedModel
from fdjax.population.objectives import clean_and_combined, objective_names, share_losses
from fdjax.population.pareto import dominates, pareto_report
from fdjax.population.preferences import preference_vectors
from fdjax.population.state import create_population_state, stack_members
from fdjax.study.runner import Stage
from fdjax.study.training import Recipe, train_stage
from fdjax.trees import stack_trees, unstack_tree

NAME = "ea_adam"


def _setup(ctx):
  cfg = ctx.config.ea_adam
  objectives = objective_names(ctx.plan)
  preferences = preference_vectors(int(cfg.size), len(objectives))
  trainable = np.array([not (cfg.freeze_first and i == 0) for i in range(int(cfg.size))])
  return cfg, objectives, preferences, trainable


def _stage(runner) -> dict:
  ctx = runner.ctx
  cfg, objectives, preferences, trainable = _setup(ctx)
  size = len(preferences)

  def make_state(variables, tx, rng, mesh):
    evolution = init_evolution(jax.random.fold_in(rng, 1), preferences, trainable)
    return create_population_state(variables, tx, rng, evolution, mesh)

  hook = evolution_hook(scorer(ctx, int(cfg.fitness_examples)), EvolutionConfig.from_config(cfg),
                        objectives, higher_is_better=ctx.task.metric.higher_is_better,
                        report_path=os.path.join(ctx.stage_dir(NAME), "pareto.json"))
  recipe = Recipe(share_losses(ctx.model, ctx.task, clean_and_combined(ctx.plan), len(objectives)),
                  init=stack_members([runner.get("clean")] * size), shares=len(objectives),
                  model=StackedModel(ctx.model, size),
                  grad_fn=population_grad_fn(preferences, trainable=trainable,
                                             loop=cfg.member_loop),
                  wrap_tx=lambda tx: optax.chain(tx, freeze_members(trainable)),
                  make_state=make_state, on_epoch_end=hook)
  return train_stage(ctx, NAME, cfg, recipe)


def _stages(ctx):
  return {NAME: Stage(NAME, ("clean",), _stage, block=NAME, shares=len(ctx.degradations) + 1,
                      uses=("eval.seed", "eval_batch_size"))}


def merged_models(stacked: dict, member_metric: np.ndarray) -> dict:
  """``{'best': (index, variables), 'uniform': variables, 'weighted': variables}`` from
  members stacked on axis 0 and their validation metric ``[P, M]`` (higher is better)."""
  members = [unstack_tree(stacked, i) for i in range(member_metric.shape[0])]
  mean = member_metric.mean(axis=1)
  best = int(np.argmax(mean))
  return {"best": (best, members[best]),
          "uniform": fusion.uniform_soup(members, batch_stats="average"),
          "weighted": fusion.weighted_soup(members, np.maximum(mean, 1e-12).tolist(),
                                           batch_stats="average")}


def _rows(runner) -> Output:
  ctx = runner.ctx
  cfg, objectives, _, _ = _setup(ctx)
  stacked = runner.get(NAME)
  sign = 1.0 if ctx.task.metric.higher_is_better else -1.0
  metric = member_metrics(ctx, stacked, int(cfg.fitness_examples))
  merged = merged_models(stacked, sign * metric)
  best, best_variables = merged["best"]
  averages = stack_trees([merged["uniform"], merged["weighted"]])
  average_metric = member_metrics(ctx, averages, int(cfg.fitness_examples))
  report = pareto_report(sign * metric, objectives)
  report["merged"] = {
      name: {"values": dict(zip(objectives, map(float, row))),
             "dominates_members": [i for i in range(len(metric))
                                   if dominates(sign * row, sign * metric[i])]}
      for name, row in zip(("uniform", "weighted"), average_metric)}
  with open(os.path.join(ctx.stage_dir(NAME), "merged.json"), "w") as f:
    json.dump(report, f, indent=1)
  return Output(
      [("EA-Adam best member", runner.evaluate("ea_adam_best", best_variables)),
       ("EA-Adam uniform average", runner.evaluate("ea_adam_uniform", merged["uniform"])),
       ("EA-Adam val-weighted average", runner.evaluate("ea_adam_weighted", merged["weighted"]))],
      extra={"EA-Adam best member": {"member": best}},
      artifacts={"pareto": report})


METHOD = Method(NAME, requires=lambda ctx: (NAME,), rows=_rows, stages=_stages,
                models={})
