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
``metrics.jsonl``). Stage ``ea_adam/merged`` (no training): the best single member
(highest merge weight: the family's ``merge_weights`` of the validation values, e.g. the
mean accuracy over the objectives), the uniform average of the members and their
validation-weighted average (weights = the merge weights), saved under
``ea_adam/merged/{best,uniform,weighted}/variables``, each a row;
``ea_adam/merged/merged.json`` holds the validation Pareto report of the members with the
two averages beside them and the merge weights (``pareto.png`` beside it: objective 0 vs
the others' mean, averages marked).

Method ``ea_adam_fusion`` (stage ``ea_adam_fusion``, config block ``ea_adam_fusion``):
EA-Adam's fusion network over the frozen members (``fdjax.population.fusion_net``),
its predictor trained on combined degradations; rows: the dynamic network, and the
static model baked from the mixing weights averaged over ``calibration_batches``
validation batches under combined degradations (fixed keys), stage
``ea_adam_fusion/baked`` (``variables`` and ``alpha.json``).

``fdjax.load_model(run, name)`` / ``fdjax.predictor.load_predictor`` load the static
rows: ``ea_adam_best``, ``ea_adam_uniform``, ``ea_adam_weighted``, ``ea_adam_fusion_baked``;
'ea_adam' (P models) and 'ea_adam_fusion' (the dynamic network, per-image mixing) are
refused with a ValueError naming what to load instead.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import optax

from fdjax import data as data_lib
from fdjax import fusion
from fdjax.distributed import write_once
from fdjax.json_files import read_json, write_json
from fdjax.methods import fusiondistill_moe
from fdjax.methods.base import Loadable, Method, Output, one_model
from fdjax.moe.cost import inference_flops, param_count
from fdjax.population.evolution import EvolutionConfig, init_evolution
from fdjax.population.families import objectives_of
from fdjax.population.fitness import validation_subset
from fdjax.population.fusion_net import (DynamicNetwork, MixingPredictor, average_mixing, bake,
                                         dynamic_predictor, fusion_loss)
from fdjax.population.gradients import freeze_members, population_grad_fn
from fdjax.population.hook import evolution_hook
from fdjax.population.model import StackedModel
from fdjax.population.pareto import dominates, pareto_report
from fdjax.population.pareto_plot import plot_pareto
from fdjax.population.preferences import preference_vectors
from fdjax.population.state import create_population_state, stack_members
from fdjax.study.runner import Stage
from fdjax.study.fixed_keys import fixed_key_transform
from fdjax.study.training import Recipe, train_stage
from fdjax.train import init_variables
from fdjax.train.variables_io import load_variables, save_variables, variables_exist
from fdjax.trees import stack_trees, unstack_tree

NAME = "ea_adam"
FUSION = "ea_adam_fusion"
MERGED = f"{NAME}/merged"      # the static merged models: MERGED/<kind>/variables
BAKED = f"{FUSION}/baked"      # the baked fusion network: BAKED/variables
# kind -> row label; the model loads as 'ea_adam_<kind>' (fdjax.load_model)
DYNAMIC_ROW, BAKED_ROW = "EA-Adam fusion (dynamic)", "EA-Adam fusion (baked)"
KINDS = {"best": "EA-Adam best member", "uniform": "EA-Adam uniform average",
         "weighted": "EA-Adam val-weighted average"}


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
    # Three streams: a step's key is fold_in(steps, step), so the evolution's and the
    # critics' keys must not be fold_ins of the steps' key (fold_in(rng, 1) was step 1's).
    steps, evolution_key, critic_key = jax.random.split(rng, 3)
    evolution = init_evolution(evolution_key, preferences, trainable)
    critic = (None if family.init_critic is None else family.init_critic(critic_key, size))
    return create_population_state(variables, tx, steps, evolution, mesh, critic=critic)

  values = family.values(int(cfg.fitness_examples))
  hook = evolution_hook(lambda stacked: -values(stacked), EvolutionConfig.from_config(cfg),
                        family.names, higher_is_better=True, ref=family.ref,
                        report_path=os.path.join(ctx.stage_dir(NAME), "pareto.json"),
                        evolve_every=int(cfg.evolve_every), generations=int(cfg.generations))
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
                      uses=("eval.seed", "eval_batch_size"), pairs=False),
          MERGED: Stage(MERGED, (NAME,), _merged_stage, uses=("eval.seed", "eval_batch_size"))}


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


def _merge(ctx, stacked) -> tuple[dict, dict]:
  """``(models, report)``: the merged models by kind and the validation Pareto report of
  the members (``best_member``: the best one's index; ``merge_weights``: the members'
  weights; ``merged``: the averages' values)."""
  cfg, family, _, _ = _setup(ctx)
  objectives = family.names
  values = family.values(int(cfg.fitness_examples))
  metric = values(stacked)
  weights = family.merge_weights(metric)
  merged = merged_models(stacked, weights)
  best, best_variables = merged["best"]
  average_metric = values(stack_trees([merged["uniform"], merged["weighted"]]))
  report = pareto_report(metric, objectives, ref=family.ref)
  report.update(best_member=best, merge_weights=np.asarray(weights, np.float64).tolist())
  report["merged"] = {
      name: {"values": dict(zip(objectives, map(float, row))),
             "dominates_members": [i for i in range(len(metric))
                                   if dominates(row, metric[i])]}
      for name, row in zip(("uniform", "weighted"), average_metric)}
  return {**merged, "best": best_variables}, report


def _merged_stage(runner) -> dict:
  """Stage ``ea_adam/merged``: ``{kind: variables for kind in KINDS, 'report': ...}``,
  the models saved under ``ea_adam/merged/<kind>/variables`` with ``merged.json`` (the
  report, written last) and ``pareto.png`` beside them; reused when all are present."""
  ctx = runner.ctx
  stage_dir = ctx.stage_dir(MERGED)
  paths = {kind: os.path.join(stage_dir, kind, "variables") for kind in KINDS}
  report_path = os.path.join(stage_dir, "merged.json")
  if not (os.path.exists(report_path) and all(map(variables_exist, paths.values()))):
    models, report = _merge(ctx, runner.get(NAME))
    for kind, path in paths.items():
      if not variables_exist(path):
        save_variables(path, models[kind])
    family = objectives_of(ctx)
    write_once(lambda: plot_pareto(report, os.path.join(stage_dir, "pareto.png"),
                                   scale=family.scale, unit=family.unit), "pareto.png")
    write_once(lambda: write_json(report_path, report, indent=1), "merged.json")
  report = read_json(report_path, hint=f"delete {stage_dir} and run the study again: the "
                                      "merged models are made anew")
  template = ctx.template_variables()
  return {"report": report, **{kind: load_variables(path, template)
                               for kind, path in paths.items()}}


def _rows(runner) -> Output:
  merged = runner.get(MERGED)
  rows = [(label, runner.evaluate(f"{NAME}_{kind}", merged[kind]))
          for kind, label in KINDS.items()]
  return Output(rows, extra={KINDS["best"]: {"member": merged["report"]["best_member"]}},
                artifacts={"pareto": merged["report"]},
                models={label: one_model(merged[kind]) for kind, label in KINDS.items()})


METHOD = Method(NAME, requires=lambda ctx: (MERGED,), rows=_rows, stages=_stages,
                models={f"{NAME}_{kind}": Loadable(f"{MERGED}/{kind}") for kind in KINDS},
                refused={NAME: f"the population holds ea_adam.size models; load one of its "
                               f"merged models: {', '.join(f'{NAME}_{k}' for k in KINDS)}"},
                row_names={label: f"{NAME}_{kind}" for kind, label in KINDS.items()},
                reports={f"{NAME}/pareto.json": "the members' objectives and Pareto front, "
                                                "last epoch",
                         f"{MERGED}/merged.json": "validation report of the members, the "
                                                  "averages and the merge weights",
                         f"{MERGED}/pareto.png": "objective 0 against the others' mean"})


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
                        shares=len(ctx.degradations), pairs=False),
          BAKED: Stage(BAKED, (NAME, FUSION), _baked_stage, uses=("batch_size", "eval.seed"))}


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


def _baked_stage(runner) -> dict:
  """Stage ``ea_adam_fusion/baked``: ``{'variables', 'alpha'}``, the static model of the
  mixing weights averaged over ``calibration_batches`` validation batches, saved under
  ``ea_adam_fusion/baked/variables`` with ``alpha.json`` (written last); reused when present."""
  ctx = runner.ctx
  stage_dir = ctx.stage_dir(BAKED)
  path, alpha_path = os.path.join(stage_dir, "variables"), os.path.join(stage_dir, "alpha.json")
  if not (os.path.exists(alpha_path) and variables_exist(path)):
    mean_alpha = average_mixing(ctx.task, _predictor(ctx), runner.get(FUSION)["params"],
                                calibration_images(ctx, int(ctx.config.ea_adam_fusion
                                                            .calibration_batches)))
    if not variables_exist(path):
      save_variables(path, bake(runner.get(NAME), mean_alpha))
    alpha_record = {"alpha": np.asarray(mean_alpha).tolist()}
    write_once(lambda: write_json(alpha_path, alpha_record, indent=1), "alpha.json")
  alpha = read_json(alpha_path, hint=f"delete {os.path.dirname(alpha_path)} and run the study "
                                    "again: the fusion network is baked anew")["alpha"]
  return {"variables": load_variables(path, ctx.template_variables()), "alpha": alpha}


def _fusion_rows(runner) -> Output:
  ctx = runner.ctx
  stacked, predictor_variables = runner.get(NAME), runner.get(FUSION)
  dynamic = runner.evaluate(
      "ea_adam_fusion_dynamic", {"predictor": predictor_variables["params"], "members": stacked},
      predict=dynamic_predictor(ctx.task, ctx.model, _predictor(ctx)))
  baked = runner.get(BAKED)
  label = BAKED_ROW
  alpha = "/".join(f"{float(a):.2f}" for a in baked["alpha"])   # one string: a table cell
  extra = {label: {"alpha": alpha}}
  if ctx.config.eval.get("cost_columns"):   # the baked row is one dense model (the default)
    extra[DYNAMIC_ROW] = _dynamic_cost(
        ctx, {"predictor": predictor_variables["params"], "members": stacked})
  return Output([(DYNAMIC_ROW, dynamic),
                 (label, runner.evaluate("ea_adam_fusion_baked", baked["variables"]))],
                extra=extra, models={label: one_model(baked["variables"])})


def _dynamic_cost(ctx, variables) -> dict:
  """The dynamic row's cost columns: the P members' and the mixing network's
  parameters, and its inference FLOPs per image (the P members' layers and the mixing
  network) relative to one dense model's, counted by XLA as the MoE rows' are."""
  network = DynamicNetwork(ctx.model, _predictor(ctx))
  shape = fusiondistill_moe.cost_shape(ctx, ctx.model)
  # parameters only (the members' BatchNorm statistics are not)
  params = param_count(variables["members"]) + param_count({"params": variables["predictor"]})
  result = {"flops": inference_flops(lambda v, x: network.apply(v, x)[0], variables, shape),
            "params": params, "active_params": params}
  dense = fusiondistill_moe.cost(ctx, ctx.model, ctx.template_variables())
  return {key: value for key, value in fusiondistill_moe.cost_columns(result, dense).items()
          if key != "active params"}


FUSION_METHOD = Method(
    FUSION, requires=lambda ctx: (BAKED,), rows=_fusion_rows, stages=_fusion_stages,
    models={f"{FUSION}_baked": Loadable(BAKED)},
    refused={FUSION: f"the dynamic fusion network mixes the members per image; load its "
                     f"static bake {FUSION}_baked (the calibration-averaged mixing weights)"},
    row_names={DYNAMIC_ROW: FUSION, BAKED_ROW: f"{FUSION}_baked"},
    reports={f"{BAKED}/alpha.json": "the baked mixing weights per member"})
