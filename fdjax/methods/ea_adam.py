"""EA-Adam (Sun et al., TIP 2024): a population of P models, one per preference between
the objectives of ``config.ea_adam.objectives`` (``fdjax.population.families``:
'degradations' = clean images and each degradation, classification; 'perception' = L1
and an adversarial loss with a discriminator per member, restoration / SR), trained by
one vmapped step with per-tensor normalised objective gradients, evolved after every
epoch (SBX, Gaussian mutation, MOEA/D with the normalised Tchebycheff function),
then merged. Every member starts from the clean model (for restoration: the base
restorer trained with the task loss); member 0 (objective 0 only) is frozen when
``ea_adam.freeze_first``.

Stage ``ea_adam`` (config block ``ea_adam``): the stacked members under
``ea_adam/variables``, the last Pareto report in ``ea_adam/pareto.json`` (per epoch in
``metrics.jsonl``). Rows: the best single member (highest merge weight: the family's
``merge_weights`` of the validation values, e.g. the mean accuracy over the objectives),
the uniform average of the members and their validation-weighted average (weights =
the merge weights). ``ea_adam/merged.json`` holds the validation
Pareto report of the members with the two averages beside them (``ea_adam/pareto.png``:
clean vs the degradations' mean, averages marked).

Method ``ea_adam_fusion`` (stage ``ea_adam_fusion``, config block ``ea_adam_fusion``):
EA-Adam's fusion network over the frozen members (``fdjax.population.fusion_net``),
its predictor trained on combined degradations; rows: the dynamic network, and the
static model baked from the mixing weights averaged over ``calibration_batches``
validation batches under combined degradations (fixed keys).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import optax

from fdjax import data as data_lib
from fdjax import fusion
from fdjax.methods.base import Method, Output
from fdjax.population.evolution import EvolutionConfig, init_evolution
from fdjax.population.families import objectives_of
from fdjax.population.fitness import validation_subset
from fdjax.population.fusion_net import (MixingPredictor, average_mixing, bake,
                                         dynamic_predictor, fusion_loss)
from fdjax.population.gradients import freeze_members, population_grad_fn
from fdjax.population.hook import evolution_hook
from fdjax.population.model import StackedModel
from fdjax.population.pareto import dominates, pareto_report
from fdjax.population.pareto_plot import plot_pareto
from fdjax.population.preferences import preference_vectors
from fdjax.population.state import create_population_state, stack_members
from fdjax.study.runner import Stage
from fdjax.study.training import Recipe, fixed_key_transform, train_stage
from fdjax.train import init_variables
from fdjax.trees import stack_trees, unstack_tree

NAME = "ea_adam"
FUSION = "ea_adam_fusion"


def _setup(ctx):
  cfg = ctx.config.ea_adam
  family = objectives_of(ctx)
  preferences = preference_vectors(int(cfg.size), len(family.names))
  trainable = np.array([not (cfg.freeze_first and i == 0) for i in range(int(cfg.size))])
  return cfg, family, preferences, trainable


def _stage(runner) -> dict:
  ctx = runner.ctx
  cfg, family, preferences, trainable = _setup(ctx)
  size = len(preferences)

  def make_state(variables, tx, rng, mesh):
    evolution = init_evolution(jax.random.fold_in(rng, 1), preferences, trainable)
    critic = (None if family.init_critic is None
              else family.init_critic(jax.random.fold_in(rng, 2), size))
    return create_population_state(variables, tx, rng, evolution, mesh, critic=critic)

  values = family.values(int(cfg.fitness_examples))
  hook = evolution_hook(lambda stacked: -values(stacked), EvolutionConfig.from_config(cfg),
                        family.names, higher_is_better=True, ref=family.ref,
                        report_path=os.path.join(ctx.stage_dir(NAME), "pareto.json"))
  recipe = Recipe(family.loss_fn, init=stack_members([runner.get("clean")] * size),
                  shares=family.shares,
                  model=StackedModel(ctx.model, size),
                  grad_fn=population_grad_fn(preferences, trainable=trainable,
                                             loop=cfg.member_loop),
                  wrap_tx=lambda tx: optax.chain(tx, freeze_members(trainable)),
                  make_state=make_state, on_epoch_end=hook)
  return train_stage(ctx, NAME, cfg, recipe)


def _stages(ctx):
  return {NAME: Stage(NAME, ("clean",), _stage, block=NAME, shares=objectives_of(ctx).shares,
                      uses=("eval.seed", "eval_batch_size"))}


def merged_models(stacked: dict, weights: np.ndarray) -> dict:
  """``{'best': (index, variables), 'uniform': variables, 'weighted': variables}`` from
  members stacked on axis 0 and their merge weights ``[P]`` (> 0, higher is better:
  ``Objectives.merge_weights`` of their validation values)."""
  weights = np.asarray(weights, np.float64)
  members = [unstack_tree(stacked, i) for i in range(len(weights))]
  best = int(np.argmax(weights))
  return {"best": (best, members[best]),
          "uniform": fusion.uniform_soup(members, batch_stats="average"),
          "weighted": fusion.weighted_soup(members, weights.tolist(), batch_stats="average")}


def _rows(runner) -> Output:
  ctx = runner.ctx
  cfg, family, _, _ = _setup(ctx)
  objectives = family.names
  stacked = runner.get(NAME)
  values = family.values(int(cfg.fitness_examples))
  metric = values(stacked)
  merged = merged_models(stacked, family.merge_weights(metric))
  best, best_variables = merged["best"]
  averages = stack_trees([merged["uniform"], merged["weighted"]])
  average_metric = values(averages)
  report = pareto_report(metric, objectives, ref=family.ref)
  report["merged"] = {
      name: {"values": dict(zip(objectives, map(float, row))),
             "dominates_members": [i for i in range(len(metric))
                                   if dominates(row, metric[i])]}
      for name, row in zip(("uniform", "weighted"), average_metric)}
  with open(os.path.join(ctx.stage_dir(NAME), "merged.json"), "w") as f:
    json.dump(report, f, indent=1)
  plot_pareto(report, os.path.join(ctx.stage_dir(NAME), "pareto.png"),
              scale=family.scale, unit=family.unit)
  return Output(
      [("EA-Adam best member", runner.evaluate("ea_adam_best", best_variables)),
       ("EA-Adam uniform average", runner.evaluate("ea_adam_uniform", merged["uniform"])),
       ("EA-Adam val-weighted average", runner.evaluate("ea_adam_weighted", merged["weighted"]))],
      extra={"EA-Adam best member": {"member": best}},
      artifacts={"pareto": report})


METHOD = Method(NAME, requires=lambda ctx: (NAME,), rows=_rows, stages=_stages,
                models={})


def _predictor(ctx) -> MixingPredictor:
  return MixingPredictor(int(ctx.config.ea_adam.size), int(ctx.config.ea_adam_fusion.width))


def _fusion_stage(runner) -> dict:
  ctx = runner.ctx
  predictor, degrade = _predictor(ctx), ctx.plan.combined()
  recipe = Recipe(fusion_loss(ctx.model, predictor, ctx.task, degrade),
                  init=init_variables(predictor, jax.random.fold_in(
                      jax.random.PRNGKey(ctx.seed), 1), ctx.dataset.image_shape),
                  frozen=runner.get(NAME), shares=len(ctx.degradations), model=predictor,
                  on_epoch_end=lambda state, epoch: {})   # keeps the last epoch
  return train_stage(ctx, FUSION, ctx.config.ea_adam_fusion, recipe)


def _fusion_stages(ctx):
  return {**_stages(ctx),
          FUSION: Stage(FUSION, (NAME,), _fusion_stage, block=FUSION,
                        shares=len(ctx.degradations))}


def calibration_images(ctx, batches: int):
  """Up to ``batches`` validation batches (uint8) under combined degradations, fixed keys."""
  split = validation_subset(ctx, 0)
  shares = len(ctx.degradations)
  size = shares * max(1, min(ctx.config.batch_size, len(split) // shares))
  transform = fixed_key_transform(ctx, ctx.plan.combined())
  for i, batch in enumerate(data_lib.train_batches(split, size, seed=ctx.seed, epoch=0)):
    if i >= batches:
      return
    yield transform(i, batch["image"])


def _fusion_rows(runner) -> Output:
  ctx = runner.ctx
  stacked, predictor_variables = runner.get(NAME), runner.get(FUSION)
  predictor = _predictor(ctx)
  dynamic = runner.evaluate(
      "ea_adam_fusion_dynamic", {"predictor": predictor_variables["params"], "members": stacked},
      predict=dynamic_predictor(ctx.task, ctx.model, predictor))
  mean_alpha = average_mixing(ctx.task, predictor, predictor_variables["params"],
                              calibration_images(ctx, int(ctx.config.ea_adam_fusion
                                                          .calibration_batches)))
  baked = runner.evaluate("ea_adam_fusion_baked", bake(stacked, mean_alpha))
  alpha = "/".join(f"{float(a):.2f}" for a in mean_alpha)   # one string: a table cell
  return Output([("EA-Adam fusion (dynamic)", dynamic), ("EA-Adam fusion (baked)", baked)],
                extra={"EA-Adam fusion (baked)": {"alpha": alpha}})


FUSION_METHOD = Method(FUSION, requires=lambda ctx: (FUSION,), rows=_fusion_rows,
                       stages=_fusion_stages, models={})
