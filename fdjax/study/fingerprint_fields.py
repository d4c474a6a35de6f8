"""The fields of a stage's fingerprint (``fdjax.study.fingerprint``): what determines
its result, computed from the run context; the rules by which older records were made
(``OLDER_RULES``), and the config fields added since runs were saved (``ADDED_FIELDS``),
left out while they hold the value those runs had."""

from __future__ import annotations

import json
from typing import Any, Mapping

import ml_collections

from fdjax.data import restoration_sets, share_pools
from fdjax.degradations.registry import grid_changes, revisions

RESTORATION_DATA = ("root", "train", "test", "test_pairs", "train_pairs", "pair_dirs", "tile",
                    "max_train_images", "crop_multiple")
# The test sets train nothing (validation comes from the training photos; evaluations
# key their caches on the test sets' contents): left out of the fields since rule 0.
TEST_DATA = ("test", "test_pairs")
PAIR_OPTIONS = ("rotate_real",)   # read only with real training pairs and rot90
# Config fields added after runs were saved, by their dotted path in a stage's fields
# (``stage_fields``: 'restoration.<option>', 'block.<field>' for the stage's own block,
# 'augment.<field>', ...), and the value every run saved before them had. A field that
# keeps that value is left out of the fingerprint, so those runs stay valid (reused and
# resumed); any other value enters it and is named on a mismatch. A new config field
# that changes a stage's result gets a line here. '<path>@<block>': only in the stages
# whose own block is <block> (a field that another block had before: its records hold it).
ADDED_FIELDS = {"restoration.image_prior": "none", "restoration.prior_context": "patch",
                "restoration.cue_jitter": 0.0, "restoration.rotate_real": True,
                "block.task_balance": "",
                "block.output_weight": 0.0, "block.optimizer.beta2": 0.999,
                "block.optimizer.ema_decay": 0.0, "block.optimizer.warmup_epochs": 0,
                "block.optimizer.clip_norm": 0.0,
                "block.homogenize@fusiondistill": "none",   # the 'moe' block always had it
                "augment.cutout_fill": "black",
                "block.evolve_every@ea_adam": 1, "block.generations@ea_adam": 1}
# Config-wide fields (top-level keys of a stage's fields, from its ``uses``) that the
# stage's own block field replaces when that is set (not ''): the config-wide value then
# does not change the stage's result, so it leaves the stage's fields and changing it
# retrains nothing it does not change. Records made before this rule (2026-12-03) hold
# both; ``stage_fields(..., rule=3)`` computes them that way, and ``Runner.check``
# accepts and re-records such a record.
OVERRIDDEN_BY = {"task_balance": "block.task_balance"}
# The rules records were made by (``stage_fields(rule=...)``): 0, today's; 1, before the
# data's contents, the degradations' order and the test sets' fields (``TEST_DATA``)
# changed the fields (2026-12-07, morning); 2, before the evaluation-only restoration
# options (``EVAL_ONLY``) left them (2026-12-07); 3, before a stage's ``ignores`` left
# them (2026-12-06); 4, before ``OVERRIDDEN_BY`` (2026-12-03); 5, ``LATER_IGNORES``
# below. A record made by an older rule is the same stage: ``Runner.check`` accepts and
# re-records it (a record of rules 1-4 holds no contents: they are trusted once, then
# recorded).
OLDER_RULES = (1, 2, 3, 4, 5)
# Rule 5 (outside the order of 1-4): today's fields before the ``ignores`` named here
# joined the stages' ``ignores`` (2026-12-07, evening: the experts' ``distill_feature``,
# which only ILIAC reads); every older rule's records hold them too.
LATER_IGNORES = ("distill_feature",)
# Restoration options that change what is reported, never what a stage trains (NIQE is
# an opt-in column): adding one to a finished run re-evaluates, it does not retrain.
EVAL_ONLY = ("extra_metrics",)


def plain(value: Any) -> Any:
  """``value`` as plain JSON-able data: ConfigDicts and mappings as dicts sorted by key,
  tuples as lists."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {str(k): plain(v) for k, v in sorted(value.items())}
  if isinstance(value, (list, tuple)):
    return [plain(v) for v in value]
  return value


def without_added(fields: Mapping[str, Any], added: Mapping[str, Any] | None = None) -> dict:
  """``fields`` as plain nested dicts, without each field of ``added`` (dotted path ->
  value; default: ``added_fields(None)``, the fields added to every stage) that holds the
  value runs had before the field existed."""
  added = added_fields(None) if added is None else added

  def keep(tree: dict, prefix: str) -> dict:
    out = {}
    for key, value in tree.items():
      path = f"{prefix}.{key}" if prefix else key
      if path in added and value == added[path]:
        continue
      out[key] = keep(value, path) if isinstance(value, dict) else value
    return out

  return keep(plain(fields), "")


def without_overridden(fields: Mapping[str, Any],
                       overridden: Mapping[str, str] = OVERRIDDEN_BY) -> dict:
  """``fields`` (plain dicts) without each config-wide key of ``overridden`` whose
  stage-level field (dotted path) is set (present and not '')."""
  out = dict(fields)
  for key, path in overridden.items():
    node: Any = out
    for part in path.split("."):
      node = node.get(part) if isinstance(node, Mapping) else None
    if node not in (None, ""):
      out.pop(key, None)
  return out


def without_paths(fields: Mapping[str, Any], paths) -> dict:
  """``fields`` (plain dicts) without each of ``paths``: a top-level key as it is (a
  stage's use such as 'eval.seed'), else a dotted path into the nested fields
  ('fusion.weights', 'block.ks')."""
  if not paths:
    return dict(fields)
  out = json.loads(json.dumps(fields, default=str))   # a deep copy of plain data
  for path in paths:
    if path in out:
      del out[path]
      continue
    *parents, leaf = path.split(".")
    node: Any = out
    for part in parents:
      node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
      node.pop(leaf, None)
  return out


def stage_fields(ctx, stage, upstream: Mapping[str, str], *, rule: int = 0) -> dict:
  """The fields that determine ``stage``'s result in run context ``ctx``, as rule
  ``rule`` (``OLDER_RULES``) recorded them (``upstream`` then holds that rule's digests
  too): with the data's contents (``Dataset.content_digest``: training and validation
  splits, the stage's real pairs) and, for a stage of several degradations, their order
  (share i, expert i, soup weight i, the MoE student's expert i are degradation i), and
  without the test sets' fields (``TEST_DATA``) since rule 0; without the
  evaluation-only restoration options (``EVAL_ONLY``) since rule 1; without the stage's
  ``ignores`` (the fields it reads that do not change its result) since rule 2; without
  the config-wide fields its own block overrides (``OVERRIDDEN_BY``) since rule 3;
  without the ``LATER_IGNORES`` of its ``ignores`` since rule 5 (today's otherwise)."""
  ignores = stage.ignores if rule == 0 else tuple(
      p for p in stage.ignores if p not in LATER_IGNORES)
  if rule == 5:
    rule = 0
  config, plan = ctx.config, ctx.plan
  fields: dict[str, Any] = {
      "stage": stage.name, "task": config.get("task", "classification"),
      "normalization": config.data.normalization, "model": config.model,
      "data": {"source": config.data.source, "name": ctx.dataset.name,
               "validation_fraction": config.data.validation_fraction,
               "max_per_split": config.data.max_per_split,
               "sizes": [len(ctx.dataset.train),
                         len(ctx.dataset.validation) if ctx.dataset.validation else 0]},
      "seed": ctx.seed, "upstream": dict(upstream)}
  if "restoration" in config:  # the restoration task's options and data fields
    # Only stages that train on real pairs (``Stage.pair_names``) depend on how the
    # pairs are turned (rotate_real: with rot90 only).
    real = any(n in ctx.dataset.train_pairs for n in stage.pair_names(ctx))
    turned = real and config.restoration.get("rot90", True)
    fields["restoration"] = {k: _option(k, v) for k, v in config.restoration.items()
                             if (turned or k not in PAIR_OPTIONS)
                             and (rule >= 2 or k not in EVAL_ONLY)}
    fields["data"].update({k: config.data[k] for k in RESTORATION_DATA if k in config.data
                           and (rule >= 1 or k not in TEST_DATA)})
    if config.data.validation_fraction:   # runs before 2026-12-06 held out tiles
      fields["data"]["validation_unit"] = restoration_sets.VALIDATION_UNIT
  if stage.shares > 1:   # each share its own pool (fdjax.data.share_pools): before, real
    # pairs went to any share, and without them the shares split one shuffled list
    fields["data"]["share_pools"] = share_pools.POOLS
  if (stage.block == "ea_adam" and config.get("task") == "restoration"
      and config.restoration.get("model") == "measnet"):
    # MEASNet's balance loss reached EA-Adam's objectives only from 2026-12-06, late night
    # (before, it got no gradient there): such stages trained without it retrain.
    fields["objective_regularizer"] = True
  if stage.block is not None:
    fields.update(block=config[stage.block], augment=config.augment,
                  batch_size=config.batch_size, selection=config.selection)
    if config.selection == "val":
      fields["selection_eval"] = {"seed": config.eval.seed, "batch": config.eval_batch_size}
  for key in stage.uses:
    node = config
    for part in key.split("."):
      node = node[part]
    fields[key] = node
  names = plan.names if stage.levels is None else stage.levels
  ranges = {n: (lo, hi) for n, lo, hi in plan.ranges}
  fields["levels"] = {n: list(ranges.get(n, ("full",))) for n in names}   # sorted: no order
  if rule == 0:
    fields["data"]["content"] = ctx.dataset.content_digest(stage.pair_names(ctx))
    if len(names) > 1:
      fields["order"] = list(names)
  revised = revisions(names)   # a degradation whose images changed (absent: none did)
  if revised:
    fields["degradation_revisions"] = revised
  regridded = grid_changes(names)   # a grid changed or added since 2026-12-07 (absent: none)
  if regridded:
    fields["degradation_grids"] = regridded
  fields = without_added(fields, added_fields(stage.block))
  if rule < 4:
    fields = without_overridden(fields)
  if rule < 3:
    fields = without_paths(fields, ignores)
  return fields


def _option(name: str, value):
  """A restoration option as recorded: ``model_options`` as the dict it means ('k=1' and
  {'k': 1} are one stage), 0 when empty (every record before its string form, 2026-12-07,
  holds 0)."""
  if name != "model_options":
    return value
  from fdjax.tasks.restoration_options import parse_model_options
  return parse_model_options(value) or 0


def added_fields(block: str | None, added: Mapping[str, Any] = ADDED_FIELDS) -> dict:
  """``added``'s fields (dotted path -> value) that apply to a stage whose own config
  block is ``block``: the unqualified ones, and '<path>@<block>' as '<path>'."""
  out = {}
  for key, value in added.items():
    path, _, only = key.partition("@")
    if not only or only == block:
      out[path] = value
  return out
