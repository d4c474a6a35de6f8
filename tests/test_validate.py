"""fdjax.validate: every config check fails with one ConfigError line naming the field;
unknown config fields get the nearest valid names."""

import math
import re
import pathlib

import ml_collections
import pytest

from fdjax.errors import ConfigError
from fdjax.config_fields import (field_names, load_config_file, unknown_field_message,
                                  unknown_override_message)
from fdjax.validate import validate_config

REPO = pathlib.Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.py"


def tiny():
  return load_config_file(f"{QUICKSTART}:tiny")


def set_field(config, dotted: str, value) -> None:
  *blocks, last = dotted.split(".")
  node = config
  for b in blocks:
    node = node[b]
  with node.ignore_type():
    node[last] = value


def assert_fails(config, *fragments: str, device_count: int = 1) -> str:
  with pytest.raises(ConfigError) as info:
    validate_config(config, device_count=device_count)
  message = str(info.value)
  assert "\n" not in message
  for fragment in fragments:
    assert fragment in message, message
  return message


@pytest.mark.parametrize("arg", ["tiny", None, "32", "tiny,bf16", "tiny,population"])
def test_quickstart_configs_are_valid(arg):
  validate_config(load_config_file(f"{QUICKSTART}:{arg}" if arg else str(QUICKSTART)),
                  device_count=1)


def test_quickstart_runs_on_16px_digits_and_its_32_variant_on_cifar_sized_ones():
  small, large = load_config_file(str(QUICKSTART)), load_config_file(f"{QUICKSTART}:32")
  assert (small.data.source, small.augment.pad, small.augment.cutout_size) == ("digits:16", 2, 8)
  assert (large.data.source, large.augment.pad, large.augment.cutout_size) == ("digits", 4, 16)
  with pytest.raises(ValueError, match="unknown quickstart variant"):
    load_config_file(f"{QUICKSTART}:16")


BAD = [
    # training stages
    ("clean.epochs", -1, "clean.epochs must be an integer >= 1, got -1"),
    ("ea_adam.objectives", "gan", "ea_adam.objectives must be one of ('degradations', "),
    ("ea_adam.size", 1, "ea_adam.size must be an integer >= 2, got 1"),
    ("ea_adam.critic_lr", 0.0, "ea_adam.critic_lr must be a finite number > 0"),
    ("ea_adam.objectives", "perception", "task must be 'restoration' for ea_adam.objectives"),
    ("scratch.epochs", 0, "scratch.epochs must be an integer >= 1, got 0"),
    ("experts.epochs", 1.5, "experts.epochs must be an integer >= 1, got 1.5"),
    ("clean.optimizer.lr", math.nan, "clean.optimizer.lr must be finite and > 0, got nan"),
    ("fusing.optimizer.lr", math.inf, "fusing.optimizer.lr must be finite and > 0, got inf"),
    ("vanilla.optimizer.lr", 0.0, "vanilla.optimizer.lr must be finite and > 0, got 0.0"),
    ("moe.optimizer.lr", -1e-3, "moe.optimizer.lr must be finite and > 0"),
    ("experts.optimizer.name", "lamb", "experts.optimizer.name must be one of"),
    ("experts.optimizer.schedule", "step", "experts.optimizer.schedule must be one of"),
    ("clean.optimizer.milestones", (2,), "clean.optimizer.milestones must be epochs in "
                                         "1..clean.epochs=1, none repeated"),
    ("clean.optimizer.momentum", 1.5, "clean.optimizer.momentum must be in [0, 1]"),
    ("clean.optimizer.momentum", -0.1, "clean.optimizer.momentum must be in [0, 1]"),
    ("clean.optimizer.milestones", (0,), "clean.optimizer.milestones must be epochs in "
                                         "1..clean.epochs=1, none repeated"),
    ("augment.pad", -1, "augment.pad must be an integer >= 0, got -1"),
    ("augment.cutout_size", -2, "augment.cutout_size must be an integer >= 0, got -2"),
    ("moe.num_prompts", 0, "moe.num_prompts must be an integer >= 1, got 0"),
    ("moe.balance_weight", -1.0, "moe.balance_weight must be a finite number >= 0"),
    ("clean.optimizer.beta2", 0.99, "clean.optimizer.beta2 must be 0.999 (the default) with "
                                    "sgd, which has no second moment, got 0.99"),
    ("fusiondistill.optimizer.beta2", 1.0, "fusiondistill.optimizer.beta2 must be in [0, 0.999]"),
    ("experts.optimizer.momentum", 1.0, "experts.optimizer.momentum must be in [0, 1) (radam's "
                                        "first-moment decay, betas[0]), got 1.0"),
    ("experts.optimizer.decay", 0.5, "experts.optimizer.decay must be 0.2 (the default) with "
                                     "schedule 'cosine' (decay is multistep's factor"),
    ("moe.optimizer.beta2", -0.1, "moe.optimizer.beta2 must be in [0, 0.999] for radam"),
    ("fusiondistill.optimizer.ema_decay", 1.0,
     "fusiondistill.optimizer.ema_decay must be in [0, 1) (0: no parameter average), got 1.0"),
    ("clean.optimizer.ema_decay", -0.5, "clean.optimizer.ema_decay must be in [0, 1)"),
    ("clean.optimizer.warmup_epochs", 1, "clean.optimizer.warmup_epochs must be a number of "
                                         "epochs >= 0 and below clean.epochs=1, got 1"),
    ("experts.optimizer.warmup_epochs", -0.5, "experts.optimizer.warmup_epochs must be a "
                                             "number of epochs >= 0"),
    ("moe.optimizer.clip_norm", -1.0, "moe.optimizer.clip_norm must be finite and >= 0 (0: "
                                      "no clipping), got -1.0"),
    ("ea_adam.optimizer.ema_decay", 0.99, "ea_adam.optimizer.ema_decay must be 0 (the "
                                          "evolutionary epochs replace members' parameters)"),
    ("experts.optimizer.milestones", (1,), "experts.optimizer.milestones must be empty with "
                                           "schedule 'cosine' (milestones are multistep's: add "
                                           "--config.experts.optimizer.milestones='()')"),
    ("ea_adam.optimizer.clip_norm", 1.0, "ea_adam.optimizer.clip_norm must be 0 (one global "
                                         "norm would couple the population's members)"),
    ("experts.optimizer.beta2", 0.9999, "experts.optimizer.beta2 must be in [0, 0.999] for "
                                        "radam (its rectification is float32), got 0.9999"),
    ("clean.optimizer.weight_decay", -1e-4, "clean.optimizer.weight_decay must be finite"),
    ("clean.optimizer.decay", 0.0, "clean.optimizer.decay must be finite and > 0"),
    # batches and counts
    ("batch_size", 0, "batch_size must be an integer >= 1 divisible by the 1 device(s), got 0"),
    ("eval_batch_size", -64, "eval_batch_size must be an integer >= 1"),
    ("seed", 1.5, "seed must be 0: it is not used; the study's seeds are config.seeds"),
    ("seed", 1, "seed must be 0: it is not used; the study's seeds are config.seeds (e.g. "
                "--config.seeds=1"),
    ("seeds", "0,a", "seeds must be comma-separated integers"),
    ("seeds", "0,-1", "seeds must be comma-separated integers >= 0"),
    ("seeds", "", "seeds must be comma-separated integers >= 0"),
    ("log_every_steps", 0, "log_every_steps must be an integer >= 1"),
    ("checkpoint.keep", 0, "checkpoint.keep must be an integer >= 1"),
    ("checkpoint.every_steps", -5, "checkpoint.every_steps must be an integer >= 1"),
    ("eval.level_stride", 0, "eval.level_stride must be an integer >= 1"),
    ("eval.max_examples", -1, "eval.max_examples must be an integer >= 0"),
    ("fusiondistill.alpha", -0.1, "fusiondistill.alpha must be a finite number >= 0"),
    ("fusiondistill.output_weight", -1.0,
     "fusiondistill.output_weight must be a finite number >= 0"),
    # data
    ("data.validation_fraction", 1.0, "data.validation_fraction must be in [0, 1), got 1.0"),
    ("data.validation_fraction", -0.1, "data.validation_fraction must be in [0, 1)"),
    ("data.max_per_split", -1, "data.max_per_split must be an integer >= 0"),
    ("data.source", "cifar", "data.source must be one of digits, digits:<size>, folder:<path>, "
                             "tfds:<name>"),
    ("data.source", "folder:/no/such/dir", "data.source 'folder:/no/such/dir': /no/such/dir "
                                          "does not exist"),
    ("data.source", "tfds:", "data.source must be one of"),
    ("task_balance", "grad", "task_balance must be one of ('none', 'loss')"),
    ("fusiondistill.task_balance", "grad",
     "fusiondistill.task_balance must be one of ('', 'none', 'loss')"),
    ("experts.task_balance", "loss", "experts.task_balance must be '' (this stage does not"),
    ("data.source", "digits:7", "the digits size must be an integer >= 8"),
    ("data.source", "digits:", "the digits size must be an integer >= 8"),
    ("data.normalization", "cifar11", "data.normalization must be one of"),
    ("model.depth", 10, "model.depth must be 6n+2 >= 8"),
    ("model.head", "max", "model.head must be one of ('gap', 'reference')"),
    ("model.dtype", "int8", "model.dtype must be one of"),
    # methods and degradations
    ("methods", "oracle,fusiondistil", "methods must be comma-separated names from"),
    ("methods", "", "methods must be comma-separated names from"),
    ("degradations", "jpeg,fog", "degradations must be comma-separated names from"),
    ("degradations", "jpeg,jpeg", "(repeated ['jpeg'])"),
    ("degradations", " , ", "(no degradation)"),
    # modes
    ("selection", "best", "selection must be one of ('last', 'val'), got 'best'"),
    ("fusion.soup", "greedyy", "fusion.soup must be one of ('uniform', 'weighted', 'greedy')"),
    ("fusion.init_batch_stats", "first", "fusion.init_batch_stats must be one of"),
    ("fusion.modelsoups_variants", "paper,foo", "fusion.modelsoups_variants must be"),
    ("experts.loss", "mse", "experts.loss must be one of ('iliac', 'ce'), got 'mse'"),
    ("moe.homogenize", "pcgrd", "moe.homogenize must be one of ('none', 'sum', 'pcgrad', 'meta')"),
    ("fusiondistill.homogenize", "mgda",
     "fusiondistill.homogenize must be one of ('none', 'sum', 'pcgrad', 'meta')"),
    ("moe.routing", "token", "moe.routing must be one of"),
    ("moe.dispatch", "topk", "moe.dispatch must be one of"),
    ("moe.expert_loop", "scan", "moe.expert_loop must be one of"),
]


@pytest.mark.parametrize("field,value,fragment", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_each_bad_field_is_one_config_error_line(field, value, fragment):
  config = tiny()
  set_field(config, field, value)
  assert field in assert_fails(config, fragment)


def test_validation_batches_must_split_into_one_share_per_degradation():
  """With selection='val' the combined stages score validation batches of
  eval_batch_size split into one equal share per degradation: refused before training
  (it used to fail after the first epoch)."""
  config = tiny()
  config.selection = "val"
  config.eval_batch_size = 66
  assert_fails(config, "eval_batch_size must be a multiple of 4: divisible by the 1 "
                       "device(s) and by the 4 degradations with selection='val'", "got 66")
  config.eval_batch_size = 68
  validate_config(config, device_count=1)
  # Devices and shares in one message: the one multiple that serves both (a message
  # for each led the restoration configs on 8 devices to 8, then to 3).
  config.batch_size, config.eval_batch_size = 30, 8
  message = assert_fails(config, "eval_batch_size must be a multiple of 12: divisible by "
                                 "the 6 device(s) and by the 4 degradations", device_count=6)
  assert message.count("eval_batch_size") == 1
  config.eval_batch_size = 24
  validate_config(config, device_count=6)
  config.selection, config.eval_batch_size = "last", 66   # no validation batches
  validate_config(config, device_count=1)


def test_experts_cos_weight_is_refused_where_the_task_loss_alone_ignores_it():
  # experts.loss='ce' trains on the task loss only (fdjax.study.stages.expert_loss_any):
  # a cos_weight other than the default would change nothing, so it is refused.
  config = tiny()
  config.experts.loss, config.experts.cos_weight = "ce", 0.0
  assert_fails(config, "experts.cos_weight must be left at 1.0 with experts.loss='ce'",
               "got 0.0")
  config.experts.cos_weight = 1.0
  validate_config(config, device_count=1)
  config.experts.loss, config.experts.cos_weight = "iliac", 0.0   # read there
  validate_config(config, device_count=1)


def test_unknown_degradation_names_the_bad_one():
  config = tiny()
  config.degradations = "jpeg,fog"
  assert_fails(config, "(unknown ['fog'])", "got 'jpeg,fog'")


def test_batch_sizes_must_divide_by_the_devices():
  config = tiny()
  config.batch_size = 30
  config.eval_batch_size = 64
  message = assert_fails(config, "batch_size must be an integer >= 1 divisible by the 4 "
                                 "device(s), got 30", device_count=4)
  assert "eval_batch_size" not in message
  config.batch_size = 32
  validate_config(config, device_count=4)


def test_weighted_soup_needs_one_weight_per_degradation():
  config = tiny()
  config.fusion.soup = "weighted"
  config.fusion.weights = "1,1"
  assert_fails(config, "fusion.weights must be 4 comma-separated finite numbers")
  config.fusion.weights = "0,0,0,0"
  assert_fails(config, "fusion.weights must be 4")
  config.fusion.weights = "1,2,0,1"
  validate_config(config, device_count=1)


def test_moe_ks_and_train_k_within_the_number_of_degradations():
  config = tiny()
  config.degradations = "jpeg,blur"
  config.moe.train_k = 3
  config.moe.ks = "1,3"
  validate_config(config, device_count=1)  # the MoE method is not selected: not checked
  config.methods = config.methods + ",fusiondistill_moe"
  assert_fails(config, "moe.ks must be comma-separated integers in 1..2",
               "moe.train_k must be an integer in 1..2 (the number of degradations), got 3")
  config.moe.ks, config.moe.train_k = "1,2", 2
  validate_config(config, device_count=1)


def test_a_repeated_list_entry_is_refused():
  """It would count as two seeds (a std of 0 over one seed) or crash the study later."""
  config = tiny()
  config.seeds = "0,0"
  config.methods = "scratch,scratch,modelsoups,fusiondistill_moe"
  config.fusion.modelsoups_variants = "paper,paper"
  config.moe.ks = "1,1"
  assert_fails(config, "4 config problems", "seeds must be comma-separated integers >= 0, "
               "none repeated", "methods must be comma-separated names from",
               "fusion.modelsoups_variants must be comma-separated names from paper,average,"
               "reestimate, none repeated, got 'paper,paper'", "moe.ks must be")
  config.seeds, config.methods = "0,1", "scratch,modelsoups,fusiondistill_moe"
  config.fusion.modelsoups_variants, config.moe.ks = "paper,average", "1,2"
  validate_config(config, device_count=1)


def test_greedy_soup_needs_validation_batches_of_one_share_per_degradation():
  # The scorer's batches were eval_batch_size rounded down to a multiple of the
  # degradations and the devices: 3 degradations at 512 scored batches of 510 on one
  # device and 504 on eight, so which image each degradation fell on, and the soup,
  # depended on the device count. Now eval_batch_size itself, a multiple of both.
  config = tiny()
  config.fusion.soup, config.eval_batch_size = "greedy", 6
  assert_fails(config, "eval_batch_size must be a multiple of 4", "fusion.soup='greedy'")
  config.eval_batch_size = 8
  validate_config(config, device_count=1)
  config.degradations, config.eval_batch_size = "jpeg,blur,awgn", 64
  assert_fails(config, "eval_batch_size must be a multiple of 24", "by the 3 degradations",
               "fusion.soup='greedy'", device_count=8)
  config.eval_batch_size = 48
  validate_config(config, device_count=8)
  validate_config(config, device_count=1)


def test_the_classification_moe_students_stages_are_checked_before_training():
  config = tiny()
  config.methods += ",fusiondistill_moe"
  config.moe.stages = "stage9"
  assert_fails(config, "moe.stages must be comma-separated names from stage1,stage2,stage3")
  config.moe.stages = "stage2,stage2"
  assert_fails(config, "moe.stages must be")
  config.moe.stages = "stage2,stage3"
  validate_config(config, device_count=1)


def test_level_range_outside_the_grid():
  pytest.importorskip("fdjax.degradations.plan")
  config = tiny()
  if "levels" not in config:
    config.levels = ml_collections.ConfigDict({"blur": ""})
  config.levels.blur = "0:9"
  assert_fails(config, "levels.blur")


def test_on_corrupt_mode_when_the_config_has_it():
  config = tiny()
  config.checkpoint.on_corrupt = "latest"
  assert_fails(config, "checkpoint.on_corrupt must be one of ('error', 'previous')")


def test_several_problems_in_one_line():
  config = tiny()
  config.clean.epochs = -1
  config.degradations = "jpeg,fog"
  message = assert_fails(config, "2 config problems: clean.epochs must be", "; degradations")
  assert message.count(";") == 1


# --------------------------------------------------------------------------- unknown fields

def test_field_names_are_dotted_and_include_blocks():
  names = field_names(tiny())
  assert {"clean", "clean.epochs", "clean.optimizer", "clean.optimizer.lr", "seed"} <= set(names)


@pytest.mark.parametrize("key,expected", [
    ("clean.epochz", "unknown config field 'clean.epochz'; did you mean 'clean.epochs'?"),
    ("fusion.sup", "unknown config field 'fusion.sup'; did you mean 'fusion.soup'?"),
    ("clean.lr", "unknown config field 'clean.lr'; did you mean 'clean.optimizer.lr'?"),
    ("seeed", "unknown config field 'seeed'; did you mean 'seed' or 'seeds'?"),
    ("clean.optimizer.ema", "unknown config field 'clean.optimizer.ema'; did you mean "
                            "'clean.optimizer.ema_decay'?"),
    ("clean.optimizer.warmup", "unknown config field 'clean.optimizer.warmup'; did you mean "
                               "'clean.optimizer.warmup_epochs'?"),
])
def test_unknown_field_suggests_the_nearest_names(key, expected):
  assert unknown_field_message(tiny(), key) == expected


def test_unknown_field_without_near_name_lists_the_block():
  message = unknown_field_message(tiny(), "no_such")
  assert message.startswith("unknown config field 'no_such'; the top-level fields are ")
  assert "batch_size" in message and "degradations" in message
  message = unknown_field_message(tiny(), "eval.zzzzzz")
  assert message.startswith("unknown config field 'eval.zzzzzz'; the fields of 'eval' are ")


def test_a_field_of_the_other_tasks_configs_says_so():
  """It listed the top-level fields, none of them 'restoration'."""
  from fdjax.config_restoration import restoration_config
  assert unknown_field_message(tiny(), "restoration.rotate_real") == (
      "unknown config field 'restoration.rotate_real': it is a field of the restoration "
      "configs, and this config's task is classification")
  assert unknown_field_message(restoration_config(), "ensemble_ties") == (
      "unknown config field 'ensemble_ties': it is a field of the classification configs, "
      "and this config's task is restoration")


def test_unknown_override_found_in_argv():
  spec = f"{QUICKSTART}:tiny"
  argv = ["main", f"--config={spec}", "--workdir=/tmp/x", "--config.clean.epochs=3",
          "--config.clean.epochz=3"]
  assert unknown_override_message(argv) == ("unknown config field 'clean.epochz'; did you mean "
                                            "'clean.epochs'?")
  assert unknown_override_message(["main", "--config", spec, "--config.no_such"]).startswith(
      "unknown config field 'no_such'")
  assert unknown_override_message(["main", f"--config={spec}", "--config.seed=1"]) is None
  assert unknown_override_message(["main", "--config=/no/file.py", "--config.x=1"]) is None


def test_existing_folder_source_is_valid(tmp_path):
  config = tiny()
  config.data.source = f"folder:{tmp_path}"
  validate_config(config, device_count=1)


def test_router_options_are_checked():
  config = tiny()
  config.methods = "routed_experts"
  config.moe.router_input = "pixels"
  config.moe.router_lr_scale = 0.0
  config.moe.router_supervision = -1.0
  config.moe.train_k = 9
  with pytest.raises(ConfigError) as info:
    validate_config(config, device_count=1)
  message = str(info.value)
  for field in ("moe.router_input", "moe.router_lr_scale", "moe.router_supervision",
                "moe.train_k"):
    assert field in message, (field, message)


def test_a_synthetic_restoration_test_is_not_scored_at_its_clean_level():
  """There the degraded input is the target: the Input row's PSNR and its level mean are
  infinite. The schema's evaluation levels skip it; a range without it passes too."""
  config = load_config_file(str(REPO / "configs" / "restoration_quickstart.py") + ":tiny")
  validate_config(config, device_count=1)
  config.eval_levels.haze = "0,1"
  assert_fails(config, "eval_levels.haze must not include haze's clean level 0")
  config.eval_levels.haze = ""           # the whole grid, 0 included
  assert_fails(config, "eval_levels.haze must not include")
  config.levels.haze = "0.5:2"           # a range without the clean level
  validate_config(config, device_count=1)


def test_restoration_fields_that_would_fail_later_are_refused_up_front():
  # Each of these validated, then failed with a traceback (the model, the tiles, the
  # fitness batches) or did something else than asked (a repeated milestone decays once).
  def restoration(**overrides):
    config = load_config_file(str(REPO / "configs" / "restoration_quickstart.py"))
    for field, value in overrides.items():
      set_field(config, field.replace("__", "."), value)
    return config

  assert_fails(restoration(restoration__blocks=-1), "restoration.blocks must be an integer >= 0")
  assert_fails(restoration(restoration__decoder_blocks=(1, 2, 3)),
               "restoration.decoder_blocks must give one count per level (depth = 2), got 3")
  assert_fails(restoration(restoration__patch=0, data__tile=0),
               "restoration.patch=0 (no crop", "needs data.tile > 0")
  assert_fails(restoration(data__max_train_images=-1),
               "data.max_train_images must be an integer >= 0")
  perception = restoration(methods="ea_adam", selection="last", eval_batch_size=4)
  set_field(perception, "ea_adam.objectives", "perception")
  assert_fails(perception, "eval_batch_size must be a multiple of 3: divisible by the 1 "
                           "device(s) and by the 3 degradations with "
                           "ea_adam.objectives='perception'")
  paired = load_config_file(str(REPO / "configs" / "restoration_3task.py") + ":smoke")
  paired.data.pair_dirs = "rainy"   # one folder for the real pairs' inputs and targets
  assert_fails(paired, "data.pair_dirs must name two folders", "got 'rainy'")
  config = tiny()
  set_field(config, "clean.optimizer.schedule", "multistep")
  set_field(config, "clean.optimizer.milestones", (1, 1))
  assert_fails(config, "clean.optimizer.milestones must be epochs in 1..", "none repeated")


def test_values_the_data_makes_meaningless_are_refused_when_it_is_loaded():
  """Checks that need the images: caught when the task loads its data, before training."""
  from fdjax import tasks
  from fdjax.config_fields import load_config_file

  for overrides, needle in (({"pad": 16}, "augment.pad=16 is not below the images' side 16"),
                            ({"cutout_size": 32}, "augment.cutout_size=32 is at least twice")):
    config = load_config_file(str(REPO / "configs" / "quickstart.py") + ":tiny")
    config.augment.update(overrides)
    with pytest.raises(ConfigError, match=re.escape(needle)):
      tasks.from_config(config).load_data(config, 0)
  config = load_config_file(str(REPO / "configs" / "restoration_quickstart.py") + ":tiny")
  config.scoring.denoise = "shave=214"
  with pytest.raises(ConfigError, match="scoring.denoise: a border of 214 pixels leaves "
                                        "nothing of the smallest image scored for 'denoise'"):
    tasks.from_config(config).load_data(config, 0)


def test_model_options_values_are_checked_by_the_model_before_training():
  from fdjax.config_restoration import restoration_config

  config = restoration_config()
  config.methods = "oracle,fusiondistill"
  config.restoration.update(model="measnet", model_options="k=5")
  with pytest.raises(ConfigError, match="MEASNet needs 1 <= k <= num_experts"):
    validate_config(config, device_count=1)
  # Checked by fdjax, not left to JAX's initialisers (from JAX 0.11.2 they build
  # zero-width layers without an error).
  for bad in ("mlp_expand=0", "num_prompts=-1", "num_experts=2.5", "k=True"):
    config.restoration.model_options = bad
    name, value = bad.split("=")
    with pytest.raises(ConfigError, match=f"model_options.{name} must be an integer >= 1, "
                                          f"got {value}"):
      validate_config(config, device_count=1)
  config.restoration.update(model_options="k=1", depth=6, patch=64)   # stride 64: fine
  validate_config(config, device_count=1)


def test_a_restoration_config_refuses_the_classifiers_model_block():
  from fdjax.config_restoration import restoration_config

  config = restoration_config()
  config.model.dtype = "bfloat16"     # the U-Net reads restoration.dtype: would be ignored
  with pytest.raises(ConfigError, match=r"model.dtype: config.model is the classifier's; "
                                        r"config.task='restoration' builds its model from "
                                        r"restoration\.\*"):
    validate_config(config, device_count=1)
