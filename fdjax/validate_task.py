"""Config checks that depend on the task (``fdjax.validate`` calls ``check_task``).

* every task: ``distill_feature`` names a feature of the task's model (built from the
  config, ``model.feature_names``; nothing runs);
* restoration: the ``restoration`` block has only known fields (unknown ones named with
  the nearest known names) with valid values, ``data.tile`` 0 or at least the patch;
  ``config.scoring`` (per-task scoring space) has known settings for degradations the
  study evaluates; ``data.source`` is 'photos' or 'sets'; with 'sets', ``data.root``
  exists; with 'fusiondistill_moe' or 'routed_experts' (both train the MoE student),
  ``moe.stages`` names U-Net levels that hold blocks, ``moe.routing`` is 'pixel' or
  'image' and ``moe.router_input`` 'stage' or 'image'; method 'input' needs a task with
  image outputs.
"""

from __future__ import annotations

import difflib

from fdjax.config import parse_list

RESTORATION_SOURCES = ("photos", "sets")


def model_features(config) -> list[str]:
  """The feature names of the task's dense model (``model.feature_names``: built, not
  run). With ``restoration.model_options`` set, the model is also initialised abstractly
  (``jax.eval_shape``): its own checks of those values (``k`` within ``num_experts``, a
  hidden width > 0) then fail here, before training."""
  from fdjax import tasks

  task = tasks.from_config(config)
  model = task.build_model(config, tasks.DataSpec((32, 32, 3), 10))
  if config.get("restoration", {}).get("model_options"):
    import jax
    import jax.numpy as jnp

    channels = 4 if config.restoration.get("image_prior", "none") != "none" else 3
    side = max(32, 2 ** int(config.restoration.get("depth", 0)))   # a multiple of the stride
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, side, side, channels)))
  return sorted(model.feature_names)


def _block_counts(v) -> bool:
  """An int >= 0, or a list of ints >= 0 (one per level): ``restoration.blocks``."""
  if isinstance(v, bool):
    return False
  if isinstance(v, int):
    return v >= 0
  return (isinstance(v, (list, tuple)) and bool(v)
          and all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in v))


def _restoration_block(config, problems: list[str]) -> None:
  from fdjax.errors import ConfigError
  from fdjax.tasks import restoration_scoring as scoring_lib
  from fdjax.models.image_prior import PRIORS
  from fdjax.tasks.restoration_options import DEFAULTS, DTYPES, LOSSES, MODELS, parse_model_options
  from fdjax.tasks.restoration_views import PRIOR_CONTEXTS, cue_jitter_problem

  block = config.get("restoration")
  if block is None:
    return
  from fdjax.config import base_config
  # The classifier's fields, which a restorer never reads (its model from restoration.*,
  # its augmentation restoration.flip and .rot90, images in 0..1): a changed value did
  # nothing.
  defaults = base_config()

  def changed(name: str) -> list[str]:
    return sorted(k for k, v in (config.get(name) or {}).items()
                  if defaults[name].get(k, v) != v)

  if model := changed("model"):
    problems.append(f"model.{', model.'.join(model)}: config.model is the "
                    f"classifier's; config.task='restoration' builds its model from "
                    f"restoration.* (restoration.dtype, restoration.depth, "
                    f"restoration.width, ...)")
  if augment := changed("augment"):
    problems.append(f"augment.{', augment.'.join(augment)}: config.augment is "
                    f"the classifier's; config.task='restoration' augments with "
                    f"restoration.flip and restoration.rot90")
  normalization = (config.get("data") or {}).get("normalization")
  if normalization is not None and normalization != defaults.data.normalization:
    problems.append(f"data.normalization={normalization!r}: the classifier's input "
                    f"normalization; config.task='restoration' feeds its models images "
                    f"in 0..1 (leave it at {defaults.data.normalization!r})")
  for key in sorted(set(block.keys()) - set(DEFAULTS)):
    near = difflib.get_close_matches(key, list(DEFAULTS), n=3, cutoff=0.5)
    problems.append(f"restoration.{key} is not a restoration field"
                    + (f"; did you mean {', '.join('restoration.' + n for n in near)}?"
                       if near else f"; known: {sorted(DEFAULTS)}"))
  rules = {"model": (lambda v: v in MODELS, f"one of {sorted(MODELS)}"),
           "dtype": (lambda v: v in DTYPES, f"one of {sorted(DTYPES)}"),
           "loss": (lambda v: v in LOSSES, f"one of {LOSSES}"),
           "image_prior": (lambda v: v in PRIORS, f"one of {PRIORS}"),
           "prior_context": (lambda v: v in PRIOR_CONTEXTS, f"one of {PRIOR_CONTEXTS}"),
           "cue_jitter": (lambda v: isinstance(v, (int, float)) and 0 <= v <= 255,
                          "a number in 0..255 (levels of 255; 0: off)"),
           "rotate_real": (lambda v: isinstance(v, bool), "True or False"),
           "width": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
           "depth": (lambda v: isinstance(v, int) and 0 <= v <= 6, "an integer in 0..6"),
           "middle_blocks": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
           "blocks": (_block_counts, "an integer >= 0 or one integer >= 0 per level"),
           "decoder_blocks": (lambda v: v is None or _block_counts(v),
                              "0 (as blocks), an integer >= 0 or one per level"),
           "shave": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
           "patch": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0: none)")}
  for key, (ok, rule) in rules.items():
    if key in block and not ok(block[key]):
      problems.append(f"restoration.{key} must be {rule}, got {block[key]!r}")
  from fdjax.models.unet import UNetShape
  model_class = MODELS.get(block.get("model", DEFAULTS["model"]))
  if model_class is not None and not (isinstance(model_class, type)
                                      and issubclass(model_class, UNetShape)):
    problems.append(f"restoration.model {block.get('model')!r}: its class in "
                    f"fdjax.tasks.restoration_options.MODELS must subclass "
                    f"fdjax.models.unet.UNetShape (the shape fields the config fills, stride, "
                    f"feature_names), got {model_class!r}")
  shave = block.get("shave", 0)   # a bad shave is reported below, not here
  try:   # config.scoring: known settings, degradations the study evaluates
    scoring_lib.overrides(config, bool(block.get("y_channel", False)),
                          shave if isinstance(shave, int) else 0)
  except ConfigError as e:
    problems.append(str(e))
  jitter_problem = cue_jitter_problem(
      block.get("cue_jitter", DEFAULTS["cue_jitter"]),
      block.get("image_prior", DEFAULTS["image_prior"]),
      block.get("prior_context", DEFAULTS["prior_context"]))
  if jitter_problem:
    problems.append(jitter_problem)
  try:
    chosen = parse_model_options(block.get("model_options"))
  except ConfigError as e:
    problems.append(str(e))
    chosen = {}
  if block.get("model") == "measnet" and chosen.get("noisy_gating"):
    problems.append("restoration.model_options.noisy_gating: MEASNet's noisy top-K draws "
                    "from a 'gating' PRNG stream that the study's dense stages (clean, "
                    "experts, FusionDistill) do not pass; leave it False (the MoE "
                    "student's moe.noisy_gating is supported)")
  depth, patch = block.get("depth", DEFAULTS["depth"]), block.get("patch", DEFAULTS["patch"])
  if (isinstance(depth, int) and 0 <= depth <= 6 and isinstance(patch, int) and patch
      and patch % (2 ** depth)):   # a depth outside 0..6 is refused above
    problems.append(f"restoration.patch must be a multiple of the U-Net stride "
                    f"2**depth = {2 ** depth}, got {patch}")
  for key in ("blocks", "decoder_blocks"):   # one count per level: depth of them
    counts = block.get(key)
    if (isinstance(counts, (list, tuple)) and isinstance(depth, int)
        and _block_counts(counts) and len(counts) != depth):
      problems.append(f"restoration.{key} must give one count per level (depth = {depth}), "
                      f"got {len(counts)}: {list(counts)}")
  from fdjax.data.restoration_sets import pair_dirs_problem
  problem = pair_dirs_problem(config.get("data", {}))
  if problem:
    problems.append(problem)
  tile = config.get("data", {}).get("tile", 0)
  if patch == 0 and tile == 0:
    problems.append("restoration.patch=0 (no crop: the network trains on whole tiles) needs "
                    "data.tile > 0 (the tile side); data.tile=0 means twice the patch")
  if isinstance(patch, int) and isinstance(tile, int) and (tile < 0 or 0 < tile < patch):
    problems.append(f"data.tile must be 0 (twice restoration.patch) or at least "
                    f"restoration.patch = {patch}: the training patches are cut from the "
                    f"tiles, got {tile}")


def _restoration_student(config, problems: list[str]) -> None:
  """FusionDistill-MoE's U-Net student builds from the config (levels named by
  ``moe.stages`` exist, routing and router input known); nothing runs."""
  from fdjax.errors import ConfigError
  from fdjax.moe.unet_student import restoration_student

  try:
    restoration_student(config, int(config.moe.train_k))
  except ConfigError as e:
    problems.append(str(e))
  except (ValueError, TypeError) as e:   # a model field the rules above let through
    problems.append(f"the MoE student (moe.*, restoration.*) cannot be built: {e}")


def _classification_student(config, problems: list[str]) -> None:
  """The MoE ResNet's routed stages (``moe.stages``) exist and none repeats."""
  from fdjax.moe.model import STAGES

  stages = parse_list(config.moe.get("stages", ""))
  if not stages or set(stages) - set(STAGES) or len(set(stages)) != len(stages):
    problems.append(f"moe.stages must be comma-separated names from {','.join(STAGES)} "
                    f"(the ResNet's stages), none repeated, got {config.moe.get('stages')!r}")


def _synthetic_levels(config, problems: list[str]) -> None:
  """A synthetic test degradation is not evaluated at its clean level: the degraded
  input there is the target, so the Input row's PSNR is infinite and so is its mean
  over the levels (the 'clean' column already scores clean inputs)."""
  from fdjax.degradations import registry
  from fdjax.degradations.plan import LevelPlan

  try:
    plan = LevelPlan.from_config(config)
  except (ValueError, KeyError, TypeError):
    return   # fdjax.validate names the bad level setting
  real = {d for d, n in (config.data.get("test_pairs") or {}).items() if n}
  for name in plan.names:
    clean = registry.get(name).clean_level
    if name not in real and any(abs(level - clean) < 1e-9 for level, _ in plan.eval_levels(name)):
      problems.append(
          f"eval_levels.{name} must not include {name}'s clean level {clean:g} (the input "
          f"would score an infinite PSNR there; the clean column scores clean inputs): set "
          f"eval_levels.{name} to levels above it, or levels.{name} to a range without it")


def _restoration_data(config, problems: list[str]) -> None:
  from fdjax.data.restoration_sets import resolve_root

  source = config.data.get("source")
  if source not in RESTORATION_SOURCES:
    problems.append(f"data.source must be one of {RESTORATION_SOURCES} for task "
                    f"'restoration', got {source!r}")
  elif source == "sets" and not resolve_root(config.data.get("root", "")).is_dir():
    problems.append(f"data.root {config.data.get('root')!r} does not exist "
                    f"(looked at {resolve_root(config.data.get('root', ''))})")


def check_task(config, problems: list[str]) -> None:
  """Appends the task-dependent problems of ``config`` to ``problems``."""
  from fdjax.tasks import TASKS
  from fdjax.validate import MOE_METHODS   # it imports this module lazily

  name = config.get("task", "classification")
  if name not in TASKS:
    return
  methods = parse_list(config.get("methods", ""))
  if name == "restoration":
    _restoration_block(config, problems)
    _restoration_data(config, problems)
    _synthetic_levels(config, problems)
    if set(MOE_METHODS) & set(methods) and not problems:
      _restoration_student(config, problems)
  elif set(MOE_METHODS) & set(methods):
    _classification_student(config, problems)
  if config.get("eval", {}).get("self_ensemble", 0) and not hasattr(TASKS[name], "identity"):
    problems.append(f"eval.self_ensemble averages output images over flips and rotations: "
                    f"task {name!r} does not output images")
  if "input" in methods and not hasattr(TASKS[name], "identity"):
    problems.append(f"method 'input' scores degraded inputs as outputs: task {name!r} "
                    f"does not output images")
  feature = config.get("distill_feature")
  if feature is not None and not problems:
    try:
      names = model_features(config)
    except (ValueError, TypeError, ZeroDivisionError) as e:
      problems.append(f"the model of config.task={name!r} cannot be built: {e}")
      return
    if feature not in names:
      problems.append(f"distill_feature must be one of the model's features {names}, got "
                      f"{feature!r}")
