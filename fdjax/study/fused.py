"""The fused model: a weight soup of the experts with a choice of BatchNorm statistics.

Soups (``config.fusion.soup``): 'uniform' (the paper), 'weighted' (``fusion.weights``,
one per expert) and 'greedy' (Wortsman et al.: experts added in order of held-out
metric while it does not get worse; held out = the validation split under combined
degradations; the chosen experts are logged and saved in ``greedy.json``).
BatchNorm modes: 'paper' keeps the first expert's statistics, 'average' averages them,
'reestimate' averages then re-estimates them on combined-degradation training batches.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
from absl import logging

from fdjax import data as data_lib
from fdjax import fusion
from fdjax.config import parse_list
from fdjax.distributed import write_once
from fdjax.eval.metric import jit_clean, predictor, split_scores
from fdjax.json_files import write_json
from fdjax.study.context import RunContext
from fdjax.study.fixed_keys import fixed_key_transform, keeping_sharding
from fdjax.train import data_sharding
from fdjax.train.variables_io import load_variables, save_variables, variables_exist

SOUPS = ("uniform", "weighted", "greedy")
BN_MODES = ("paper", "average", "reestimate")


def unused_fields(config, bn_mode: str) -> tuple[str, ...]:
  """The fields of a fused stage's uses (``fdjax.study.stages.shared_graph``) that do not
  change the ``bn_mode`` soup of ``config.fusion.soup``: which rows report it
  (``modelsoups_variants``) or start from it (``init_batch_stats``), the weights of
  another soup, the greedy soup's validation settings, the re-estimation's batches."""
  soup = config.fusion.soup
  return ("fusion.modelsoups_variants", "fusion.init_batch_stats",
          *(() if soup == "weighted" else ("fusion.weights",)),
          *(() if soup == "greedy" else ("eval.seed", "eval_batch_size")),
          *(() if bn_mode == "reestimate" else ("fusion.reestimate_batches", "batch_size")))


def fused_stage(ctx: RunContext, expert_variables: Sequence[dict], bn_mode: str) -> dict:
  """The soup of ``config.fusion.soup`` with ``bn_mode`` statistics, saved under
  ``fused/<bn_mode>/variables`` (reused when present)."""
  cfg = ctx.config.fusion
  if cfg.soup not in SOUPS:
    raise ValueError(f"fusion.soup must be one of {SOUPS}, got {cfg.soup!r}")
  if bn_mode not in BN_MODES:
    raise ValueError(f"fusion BatchNorm mode must be one of {BN_MODES}, got {bn_mode!r}")
  stage_dir = ctx.stage_dir(f"fused/{bn_mode}")
  path = os.path.join(stage_dir, "variables")
  if variables_exist(path):
    return load_variables(path, ctx.template_variables())
  stats = "paper" if bn_mode == "paper" else "average"
  if cfg.soup == "uniform":
    soup = fusion.uniform_soup(expert_variables, batch_stats=stats)
  elif cfg.soup == "weighted":
    weights = [float(w) for w in parse_list(cfg.weights)]
    soup = fusion.weighted_soup(expert_variables, weights, batch_stats=stats)
  else:
    soup, chosen = fusion.greedy_soup(expert_variables, _held_out_score(ctx), batch_stats=stats)
    names = [ctx.degradations[i] for i in chosen]
    write_once(lambda: write_json(os.path.join(stage_dir, "greedy.json"), {"chosen": names}),
               "greedy.json")
    logging.info("greedy soup (%s BatchNorm) chose %s", bn_mode, names)
  if bn_mode == "reestimate":
    soup = fusion.reestimate_batch_stats(ctx.model, soup, _degraded_train_batches(ctx),
                                         model_input=ctx.task.model_input)
  save_variables(path, soup)
  return load_variables(path, ctx.template_variables())


def _held_out_score(ctx: RunContext):
  """The task metric on the validation split under combined degradations (fixed keys),
  signed so that higher is better (what ``greedy_soup`` maximises)."""
  if ctx.dataset.validation is None:
    raise ValueError("fusion.soup='greedy' needs a held-out split: set "
                     "data.validation_fraction > 0")
  predict = jit_clean(predictor(ctx.task, ctx.model), ctx.mesh)
  transform = fixed_key_transform(ctx, ctx.plan.combined())
  # one equal share per degradation, split evenly over the devices: validate_config
  # checks that eval_batch_size is a multiple of both, so the batches, and which image
  # each degradation falls on, are the same on any device count that divides it
  batch_size = ctx.config.eval_batch_size
  metric = ctx.task.metric.name
  return lambda variables: ctx.task.metric.signed(split_scores(
      ctx.task, predict, variables, ctx.dataset.validation, batch_size=batch_size,
      mesh=ctx.mesh, transform=transform, metrics=(metric,))[metric])


def _degraded_train_batches(ctx: RunContext):
  """Up to ``fusion.reestimate_batches`` combined-degradation training batches, fixed keys."""
  n = len(ctx.degradations)
  degrade = keeping_sharding(ctx.plan.combined())
  key = jax.random.PRNGKey(ctx.seed + 12345)
  batches = data_lib.train_batches(ctx.dataset.train, n * ctx.config.batch_size, seed=ctx.seed,
                                   epoch=0, sharding=data_sharding(ctx.mesh))
  for i, batch in enumerate(batches):
    if i >= ctx.config.fusion.reestimate_batches:
      return
    yield degrade(jax.random.fold_in(key, i), batch["image"])
