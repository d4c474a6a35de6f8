"""Checks a whole config before anything trains, and names unknown config fields.

``validate_config(config)`` raises one ``ConfigError`` listing every problem it finds
(one line: ``"<field> must be <rule>, got <value>"``, several joined with ``"; "``):

* training: every stage block of ``fdjax.config.TRAINING_STAGES`` present in the config
  has integer ``epochs >= 1``, a known optimiser and schedule, ``lr`` finite and > 0,
  ``momentum`` in [0, 1], ``weight_decay`` >= 0, ``decay`` > 0 and (multistep)
  milestones in 1..epochs; ``batch_size`` and ``eval_batch_size`` are integers >= 1
  divisible by the device count; ``seed``, ``seeds``, logging, checkpoint and
  evaluation counts are in range;
* data: the source is ``digits`` or ``digits:<size>`` (an integer >= 8),
  ``folder:<path>`` with an existing path, or ``tfds:<name>``; ``validation_fraction``
  in [0, 1); ``max_per_split`` >= 0;
* methods: every name in ``config.methods`` is known (``fdjax.methods.METHODS``);
* the task's own checks (``fdjax.validate_task``): ``distill_feature`` among the model's
  features; restoration's block, data source and refused methods;
* degradations: names known (``fdjax.degradations.REGISTRY``), none repeated, level
  ranges inside each degradation's grid (``LevelPlan.from_config``);
* modes: ``selection``, ``fusion.soup`` (and weighted-soup weights), BatchNorm modes,
  ``experts.loss``, ``task_balance`` (and the combined stages' own, '' elsewhere),
  ``moe.homogenize`` / routing / dispatch / expert loop, the model,
  ``checkpoint.on_corrupt``; with the MoE method, ``moe.ks`` and ``moe.train_k`` within
  1..number of degradations; with ``selection='val'`` or the greedy soup,
  ``eval_batch_size`` a multiple of the degradations and the devices (one equal share
  per degradation; that the data has a validation split is checked once it is loaded,
  ``fdjax.pipeline``); no list (``seeds``, ``methods``, ``moe.ks``, ...) repeats an
  entry (it would be counted as two seeds);
* EA-Adam's blocks ``ea_adam`` and ``ea_adam_fusion`` (``fdjax.validate_population``).

A field the config does not have is not checked, so older or newer schemas validate
too. Unknown fields (``--config.clean.epochz``) are named by ``fdjax.config_fields``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from fdjax.config import BALANCED_STAGES, ILIAC_COS_WEIGHT, TRAINING_STAGES, parse_list
from fdjax.errors import ConfigError
from fdjax.validate_optimizer import check_optimizer
from fdjax.validate_values import MISSING, distinct, get, is_finite_real, is_int, is_real

# Valid values of mode fields (the modules that use them raise on anything else).
BN_MODES = ("paper", "average", "reestimate")          # fdjax.study.fused
CHOICES = {
    "selection": ("last", "val"),
    "fusion.soup": ("uniform", "weighted", "greedy"),
    "fusion.init_batch_stats": BN_MODES,
    "experts.loss": ("iliac", "ce"),
    **{f"{stage}.homogenize": ("none", "sum", "pcgrad", "meta")   # fdjax.moe.homogenize
       for stage in ("fusiondistill", "moe")},
    "task_balance": ("none", "loss"),  # fdjax.train.objectives.TASK_BALANCES
    "moe.routing": ("image", "pixel"),                    # fdjax.moe.model
    "moe.dispatch": ("dense", "sparse"),
    "moe.expert_loop": ("auto", "vmap", "unroll"),
    "model.head": ("gap", "reference"),                   # fdjax.models.resnet
    "augment.cutout_fill": ("mean", "black"),   # fdjax.tasks.classification.CUTOUT_FILLS
    "ensemble_ties": ("paper_text", "paper_code"),   # fdjax.fusion.ensemble.MODES
    "model.dtype": ("float32", "bfloat16", "float16"),
    "checkpoint.on_corrupt": ("error", "previous"),       # fdjax.train.checkpoint
    "on_mismatch": ("stop", "retrain"),                   # fdjax.study.fingerprint
    "moe.router_input": ("stage", "image", "stem"),       # fdjax.moe.router
    # A stage's own task balance ('' = the config's; fdjax.train.objectives.task_balance),
    # for the stages that train on combined degradations.
    **{f"{stage}.task_balance": ("", "none", "loss") for stage in BALANCED_STAGES},
}
LIST_CHOICES = {"fusion.modelsoups_variants": BN_MODES}
SOURCE_SCHEMES = ("digits", "digits:<size>", "folder:<path>", "tfds:<name>")
MOE_METHODS = ("fusiondistill_moe", "routed_experts")  # both train the MoE student


def validate_config(config, *, device_count: int | None = None) -> None:
  """Raises ``ConfigError`` naming every problem of ``config`` (see the module
  docstring); returns None for a valid config. ``device_count`` defaults to
  ``jax.device_count()``."""
  problems: list[str] = []

  def check(field: str, ok: Callable[[Any], bool], rule: str) -> None:
    value = get(config, field)
    if value is not MISSING and not ok(value):
      problems.append(f"{field} must be {rule}, got {value!r}")

  int_at_least = lambda n: (lambda v: is_int(v) and v >= n)
  if device_count is None:
    import jax
    device_count = jax.device_count()

  # Training.
  for stage in TRAINING_STAGES:
    if get(config, stage) is MISSING:
      continue
    check(f"{stage}.epochs", int_at_least(1), "an integer >= 1")
    check_optimizer(config, stage, check)
  check("batch_size", lambda v: is_int(v) and v >= 1 and v % device_count == 0,
        f"an integer >= 1 divisible by the {device_count} device(s)")
  check("eval_batch_size", int_at_least(1), "an integer >= 1")
  # `seed` is kept for old runs' config.json; the study's seeds are `seeds`, so a seed set
  # here would be silently ignored.
  check("seed", lambda v: is_int(v) and v == 0,
        "0: it is not used; the study's seeds are config.seeds (e.g. --config.seeds=1 or "
        "'0,1,2')")
  check("seeds", lambda v: bool(_ints(v)) and min(_ints(v)) >= 0 and distinct(_ints(v)),
        "comma-separated integers >= 0, none repeated, e.g. '0' or '0,1,2'")
  for field in ("log_every_steps", "checkpoint.every_steps", "checkpoint.keep",
                "eval.level_stride", "fusion.reestimate_batches", "moe.num_prompts"):
    check(field, int_at_least(1), "an integer >= 1")
  from fdjax.eval.self_ensemble import SIZES
  check("eval.self_ensemble", lambda v: is_int(v) and v in (0, *SIZES),
        "0 (none), 2 (each input and its mirror image) or 8 (all flips and rotations)")
  for field in ("eval.max_examples", "augment.pad", "augment.cutout_size",
                "data.crop_multiple", "data.max_train_images"):
    check(field, int_at_least(0), "an integer >= 0")
  for field in ("experts.cos_weight", "fusiondistill.alpha", "fusiondistill.gamma",
                "fusiondistill.output_weight", "moe.alpha", "moe.gamma", "moe.balance_weight",
                "moe.output_weight"):
    check(field, lambda v: is_finite_real(v) and v >= 0, "a finite number >= 0")
  # The experts' cos_weight weighs ILIAC's feature term; experts.loss='ce' (the task loss
  # alone, the restoration schema's) never reads it, so a value other than the default
  # would be silently ignored.
  if get(config, "experts.loss") == "ce":
    check("experts.cos_weight", lambda v: not is_real(v) or v == ILIAC_COS_WEIGHT,
          f"left at {ILIAC_COS_WEIGHT} with experts.loss='ce': it weighs ILIAC's feature "
          "term, which only experts.loss='iliac' has")

  # Data.
  if get(config, "task") in (MISSING, "classification"):
    _check_source(get(config, "data.source"), problems)
  check("data.validation_fraction", lambda v: is_finite_real(v) and 0 <= v < 1, "in [0, 1)")
  check("data.max_per_split", int_at_least(0), "an integer >= 0 (0 = all)")
  if get(config, "task") in (MISSING, "classification"):
    check("model.depth", lambda v: is_int(v) and v >= 8 and (v - 2) % 6 == 0,
          "6n+2 >= 8 (8, 20, 32, 56, 110, ...)")
    stats = _channel_stats()
    check("data.normalization", lambda v: v in stats, f"one of {sorted(stats)}")
  if get(config, "task") is not MISSING:
    from fdjax.tasks import TASKS
    check("task", lambda v: v in TASKS, f"one of {sorted(TASKS)}")

  # Methods and degradations.
  methods = parse_list(get(config, "methods")) if get(config, "methods") is not MISSING else []
  known = _known_methods()
  check("methods", lambda v: parse_list(v) and not set(parse_list(v)) - set(known)
        and distinct(parse_list(v)),
        f"comma-separated names from {','.join(known)}, none repeated")
  n_degradations = _check_degradations(config, problems)

  # Modes.
  for field, valid in CHOICES.items():
    check(field, lambda v, valid=valid: v in valid, f"one of {valid}")
  for stage in (s for s in TRAINING_STAGES if s not in BALANCED_STAGES):
    check(f"{stage}.task_balance", lambda v: v == "",
          "'' (this stage does not combine degradations in one batch; set task_balance on "
          f"one of {', '.join(BALANCED_STAGES)})")
  for field, valid in LIST_CHOICES.items():
    check(field, lambda v, valid=valid: bool(parse_list(v)) and not set(parse_list(v)) - set(valid)
          and distinct(parse_list(v)),
          f"comma-separated names from {','.join(valid)}, none repeated")
  # Validation batches split into one equal share per degradation (LevelPlan.combined):
  # the combined stages' epoch selection, EA-Adam's perception fitness.
  split_by = [why for why, applies in (
      ("selection='val' (the combined stages' validation batches hold one equal share "
       "per degradation)", get(config, "selection") == "val"),
      ("ea_adam.objectives='perception' (its fitness scores validation batches of one "
       "equal share per degradation)",
       "ea_adam" in methods and get(config, "ea_adam.objectives") == "perception"),
      ("fusion.soup='greedy' (it scores candidates on validation batches of one equal share "
       "per degradation)", get(config, "fusion.soup") == "greedy"))
      if applies]
  # One message naming the one multiple that serves both (the 3 degradations' shares and
  # 8 devices: 24, where two messages led to 8 and then to 3).
  shares = n_degradations if split_by and n_degradations > 1 else 1
  multiple = math.lcm(shares, device_count)
  check("eval_batch_size", lambda v: not is_int(v) or v < 1 or v % multiple == 0,
        f"a multiple of {multiple}: divisible by the {device_count} device(s)"
        + (f" and by the {n_degradations} degradations with " + " and with ".join(split_by)
           if shares > 1 else ""))
  if get(config, "fusion.soup") == "weighted" and n_degradations:
    check("fusion.weights", lambda v: _weights_ok(v, n_degradations),
          f"{n_degradations} comma-separated finite numbers >= 0, not all 0 (one per degradation)")
  for field in ("moe.prompt_init_scale", "moe.router_lr_scale"):
    check(field, lambda v: is_finite_real(v) and v > 0, "a finite number > 0")
  check("moe.router_supervision", lambda v: is_finite_real(v) and v >= 0,
        "a finite number >= 0")
  if set(MOE_METHODS) & set(methods) and n_degradations:
    in_range = f"comma-separated integers in 1..{n_degradations} (the number of degradations)"
    check("moe.ks", lambda v: bool(_ints(v)) and all(1 <= k <= n_degradations for k in _ints(v))
          and distinct(_ints(v)), in_range + ", none repeated")
    check("moe.train_k", lambda v: is_int(v) and 1 <= v <= n_degradations,
          f"an integer in 1..{n_degradations} (the number of degradations)")

  from fdjax.validate_population import check_population
  check_population(config, check, problems)

  if not problems:
    from fdjax.validate_task import check_task
    check_task(config, problems)

  if problems:
    head = "" if len(problems) == 1 else f"{len(problems)} config problems: "
    raise ConfigError(head + "; ".join(problems),
                      hint="set valid values in the config file or with --config.<field>=<value>")


def _check_degradations(config, problems: list[str]) -> int:
  """Checks names and level ranges; returns the number of degradations (0 if invalid)."""
  value = get(config, "degradations")
  if value is MISSING:
    return 0
  from fdjax.degradations import REGISTRY

  names = parse_list(value)
  unknown = [n for n in names if n not in REGISTRY]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if not names or unknown or repeated:
    what = (f"unknown {unknown}" if unknown else f"repeated {repeated}" if repeated
            else "no degradation")
    problems.append(f"degradations must be comma-separated names from {sorted(REGISTRY)} "
                    f"({what}), got {value!r}")
    return 0
  levels = get(config, "levels")
  schemaless = [n for n in names if levels is not MISSING and n not in levels]
  if schemaless:   # a degradation added to the registry alone
    problems.append(f"degradations {schemaless} have no level field in the config schema "
                    "(config.levels, eval_levels): add each name to fdjax.config.LEVEL_NAMES "
                    "beside its registry entry")
    return 0
  try:
    from fdjax.degradations.plan import LevelPlan
  except ModuleNotFoundError as e:  # a schema without level ranges
    if e.name != "fdjax.degradations.plan":
      raise
    return len(names)
  try:
    LevelPlan.from_config(config)
  except (ValueError, KeyError, TypeError) as e:
    problems.append(str(e))
  return len(names)


def _ints(text) -> list[int] | None:
  try:
    return [int(t) for t in parse_list(text)]
  except ValueError:
    return None


def _weights_ok(text, n: int) -> bool:
  try:
    w = [float(t) for t in parse_list(text)]
  except ValueError:
    return False
  return len(w) == n and all(math.isfinite(x) and x >= 0 for x in w) and any(w)


def _check_source(source, problems: list[str]) -> None:
  if source is MISSING:
    return
  scheme, sep, arg = source.partition(":") if isinstance(source, str) else (None, "", "")
  if scheme == "folder" and arg:
    from fdjax.data import paths   # a relative path: the current folder's, else the repository's
    if not paths.find(arg).exists():
      problems.append(f"data.source {source!r}: {paths.not_found(arg)}")
  elif scheme == "digits" and sep:
    if not (arg.isascii() and arg.isdigit() and int(arg) >= 8):
      problems.append(f"data.source {source!r}: the digits size must be an integer >= 8 "
                      "(e.g. digits:16)")
  elif not (scheme == "digits" or scheme == "tfds" and arg):
    problems.append(f"data.source must be one of {', '.join(SOURCE_SCHEMES)}, got {source!r}")


def _known_methods() -> list[str]:
  """The names of ``fdjax.methods.METHODS``."""
  from fdjax.methods import METHODS

  return list(METHODS)


def _channel_stats():
  from fdjax.models.preprocess import CHANNEL_STATS
  return CHANNEL_STATS
