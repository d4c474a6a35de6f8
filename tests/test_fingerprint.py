"""Stage fingerprints: reuse only on a match, one clear error or a retrain otherwise,
and a change upstream reaches every stage downstream."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fdjax.errors import UserError
from fdjax.study import fingerprint, fingerprint_fields


def _fields(epochs=2, lr=0.05, upstream=None):
  return {"stage": "clean", "block": {"epochs": epochs, "optimizer": {"lr": lr}},
          "seed": 0, "upstream": upstream or {}}


def test_recorded_then_matched(tmp_path):
  stage = tmp_path / "clean"
  digest = fingerprint.check_or_record(str(stage), "clean", _fields())
  saved = json.loads((stage / fingerprint.FILE).read_text())
  assert saved["digest"] == digest == fingerprint.digest(_fields())
  (stage / "variables").mkdir()
  assert fingerprint.check_or_record(str(stage), "clean", _fields()) == digest
  assert (stage / "variables").is_dir()  # a match keeps the stage


def test_mismatch_stops_with_one_line_naming_the_fields(tmp_path):
  stage = tmp_path / "clean"
  fingerprint.check_or_record(str(stage), "clean", _fields(epochs=2, lr=0.05))
  (stage / "metrics.jsonl").write_text("{}\n")   # it trained
  with pytest.raises(fingerprint.FingerprintMismatchError) as info:
    fingerprint.check_or_record(str(stage), "clean", _fields(epochs=3, lr=1e6))
  message = str(info.value)
  assert isinstance(info.value, UserError) and "\n" not in message
  assert "stage 'clean'" in message
  assert "block.epochs: 2 -> 3" in message and "block.optimizer.lr: 0.05 -> 1000000.0" in message
  assert "--config.on_mismatch=retrain" in info.value.hint


def test_retrain_deletes_the_stage_and_records_the_new_fingerprint(tmp_path):
  stage = tmp_path / "clean"
  fingerprint.check_or_record(str(stage), "clean", _fields(epochs=2))
  (stage / "checkpoints" / "15").mkdir(parents=True)
  (stage / "checkpoints" / "15" / "_CHECKPOINT_METADATA").write_text("{}")
  new = fingerprint.check_or_record(str(stage), "clean", _fields(epochs=3), "retrain")
  assert not (stage / "checkpoints").exists()
  assert json.loads((stage / fingerprint.FILE).read_text())["digest"] == new


def test_a_stage_that_never_trained_takes_the_new_config(tmp_path):
  """A run records every planned stage first; one stopped before a stage trained may
  change that stage's config. An empty checkpoints folder is not work either."""
  stage = tmp_path / "fusiondistill"
  fingerprint.check_or_record(str(stage), "fusiondistill", _fields(epochs=1))
  (stage / "checkpoints").mkdir()
  new = fingerprint.check_or_record(str(stage), "fusiondistill", _fields(epochs=3))
  assert new == fingerprint.digest(_fields(epochs=3)) != fingerprint.digest(_fields(epochs=1))
  assert json.loads((stage / fingerprint.FILE).read_text())["digest"] == new
  (stage / "checkpoints" / "3").mkdir()
  (stage / "checkpoints" / "3" / "_CHECKPOINT_METADATA").write_text("{}")
  with pytest.raises(fingerprint.FingerprintMismatchError, match="block.epochs: 3 -> 1"):
    fingerprint.check_or_record(str(stage), "fusiondistill", _fields(epochs=1))


def test_stage_from_before_fingerprints_is_trusted_and_recorded(tmp_path):
  stage = tmp_path / "clean"
  (stage / "variables").mkdir(parents=True)
  fingerprint.check_or_record(str(stage), "clean", _fields())
  assert (stage / "variables").is_dir() and (stage / fingerprint.FILE).is_file()


def test_upstream_change_changes_the_digest():
  a = _fields(upstream={"clean": fingerprint.digest(_fields(epochs=2))})
  b = _fields(upstream={"clean": fingerprint.digest(_fields(epochs=3))})
  assert fingerprint.digest(a) != fingerprint.digest(b)
  assert fingerprint.differences(a, b) == [
      f"upstream.clean: {a['upstream']['clean']} -> {b['upstream']['clean']}"]


def test_a_used_field_added_as_a_dotted_key_is_named_in_the_differences():
  """A stage that starts to depend on a nested field (``uses=('data.train_pairs',)``)
  gets a top-level key that flattens onto the data block's own field: the message still
  names it instead of saying nothing changed."""
  pairs = {"rain": "raintrain"}
  old = {"data": {"source": "sets", "train_pairs": pairs}}
  new = {**old, "data.train_pairs": pairs}
  assert fingerprint.digest(old) != fingerprint.digest(new)
  assert fingerprint.differences(old, new) == [
      "data.train_pairs: (absent) -> {'rain': 'raintrain'}"]


def test_unknown_on_mismatch_value(tmp_path):
  with pytest.raises(ValueError, match="on_mismatch"):
    fingerprint.check_or_record(str(tmp_path / "s"), "s", _fields(), "ignore")


def test_restoration_options_added_later_keep_older_runs_valid():
  # A run saved before restoration.image_prior, prior_context and cue_jitter existed
  # recorded the block without them; today's default block must fingerprint the same,
  # and new values must not.
  from fdjax.config_restoration import restoration_config

  block = restoration_config().restoration
  saved_before = {k: v for k, v in block.to_dict().items()
                  if k not in ("image_prior", "prior_context", "cue_jitter")}
  assert fingerprint_fields.without_added({"restoration": block}) == {"restoration": saved_before}
  block.image_prior = "dark_channel"
  assert fingerprint.differences({"restoration": saved_before},
                                 fingerprint_fields.without_added({"restoration": block})) == [
      "restoration.image_prior: (absent) -> dark_channel"]
  block.prior_context = "tile"
  assert fingerprint.differences({"restoration": saved_before},
                                 fingerprint_fields.without_added({"restoration": block})) == [
      "restoration.image_prior: (absent) -> dark_channel",
      "restoration.prior_context: (absent) -> tile"]
  block.cue_jitter = 50.0
  assert fingerprint.differences({"restoration": saved_before},
                                 fingerprint_fields.without_added({"restoration": block})) == [
      "restoration.cue_jitter: (absent) -> 50.0",
      "restoration.image_prior: (absent) -> dark_channel",
      "restoration.prior_context: (absent) -> tile"]


def test_optimizer_beta2_at_pytorchs_default_keeps_older_runs_valid():
  # Stages saved before optimizer.beta2 existed trained with Adam's 0.999 and recorded
  # the optimizer without the field; another value enters the fingerprint.
  from fdjax.config import optimizer_config, stage_config

  block = stage_config(2, optimizer_config("adam", 1e-3, schedule="cosine"))
  saved_before = {"epochs": 2, "optimizer": {"decay": 0.2, "lr": 1e-3, "milestones": [],
                                             "momentum": 0.9, "name": "adam",
                                             "schedule": "cosine", "weight_decay": 1e-4}}
  assert fingerprint_fields.without_added({"block": block}) == {"block": saved_before}
  block.optimizer.beta2 = 0.9
  assert fingerprint.differences({"block": saved_before},
                                 fingerprint_fields.without_added({"block": block})) == [
      "block.optimizer.beta2: (absent) -> 0.9"]
  # The optimiser options added later the same way.
  block.optimizer.beta2, block.optimizer.ema_decay = 0.999, 0.999
  block.optimizer.warmup_epochs, block.optimizer.clip_norm = 0.5, 1.0
  assert fingerprint.differences({"block": saved_before},
                                 fingerprint_fields.without_added({"block": block})) == [
      "block.optimizer.clip_norm: (absent) -> 1.0",
      "block.optimizer.ema_decay: (absent) -> 0.999",
      "block.optimizer.warmup_epochs: (absent) -> 0.5"]


def test_a_field_added_to_any_block_keeps_older_runs_valid_at_its_old_value():
  # The rule is by path, for every part of a stage's fields, not one config block.
  added = {"block.warmup": 0, "augment.jitter": 0.0}
  saved_before = {"block": {"epochs": 2, "optimizer": {"lr": 1e-3}}, "augment": {"pad": 2},
                  "seed": 0}
  today = {"block": {"epochs": 2, "optimizer": {"lr": 1e-3}, "warmup": 0},
           "augment": {"pad": 2, "jitter": 0.0}, "seed": 0}
  assert fingerprint.digest(fingerprint_fields.without_added(today, added)) == fingerprint.digest(
      saved_before)
  today["block"]["warmup"] = 100
  today["augment"]["jitter"] = 0.1
  assert fingerprint.differences(saved_before, fingerprint_fields.without_added(today, added)) == [
      "augment.jitter: (absent) -> 0.1", "block.warmup: (absent) -> 100"]
  # The same name at another path is not dropped.
  assert fingerprint_fields.without_added({"data": {"warmup": 0}}, added) == {"data": {"warmup": 0}}


def test_a_config_wide_field_leaves_a_stage_that_sets_its_own():
  fields = {"task_balance": "loss", "block": {"task_balance": "none", "epochs": 2}}
  assert fingerprint_fields.without_overridden(fields) == {"block": fields["block"]}
  for block in ({"task_balance": "", "epochs": 2}, {"epochs": 2}):   # '' or absent: kept
    assert fingerprint_fields.without_overridden({**fields, "block": block}) == {**fields, "block": block}
  assert fingerprint_fields.without_overridden({"seed": 0}) == {"seed": 0}


def test_a_revised_degradation_enters_the_fingerprint_of_the_stages_that_train_on_it():
  # rain's streaks changed (revision 2: added light instead of a screen blend): a stage
  # trained on rain at revision 1 recorded no revision and must not be reused; a stage
  # on unrevised degradations keeps the fingerprint it recorded before revisions existed.
  import types
  from fdjax.config_restoration import restoration_config
  from fdjax.degradations.plan import LevelPlan
  from fdjax.study.runner import Stage

  config = restoration_config()
  dataset = types.SimpleNamespace(name="sets", content_digest=lambda names=(): "same",
                                  train=[0] * 4, validation=None,
                                  train_pairs={})
  ctx = types.SimpleNamespace(config=config, dataset=dataset, seed=0,
                              plan=LevelPlan(("denoise", "rain")))
  rain = fingerprint_fields.stage_fields(ctx, Stage("experts/rain", (), None, block="experts",
                                             levels=("rain",)), {})
  denoise = fingerprint_fields.stage_fields(ctx, Stage("experts/denoise", (), None, block="experts",
                                                levels=("denoise",)), {})
  from fdjax.degradations.registry import get
  revision = get("rain").revision
  assert revision > 1
  assert rain["degradation_revisions"] == {"rain": revision}
  assert "degradation_revisions" not in denoise
  recorded_before = {k: v for k, v in rain.items() if k != "degradation_revisions"}
  assert fingerprint.differences(recorded_before, rain) == [
      f"degradation_revisions.rain: (absent) -> {revision}"]


def test_the_evaluation_cache_of_a_revised_degradation_is_its_own():
  # The Input row has no weights to tell the evaluations apart: rain at a later revision
  # is evaluated in its own cache folder, and a plan without rain keeps its folder name.
  import types
  from fdjax.config_restoration import restoration_config
  from fdjax.degradations.plan import LevelPlan
  from fdjax.study.evaluator import Evaluator

  import numpy as np
  from fdjax.data import ImageSet

  test = ImageSet(np.zeros((1, 4, 4, 3), np.uint8), np.zeros(1, np.int32))

  def folder(names):   # less the test split's digest
    dataset = types.SimpleNamespace(test_sets={}, test=test)
    ctx = types.SimpleNamespace(config=restoration_config(), dataset=dataset, workdir="w",
                                plan=LevelPlan(names), task=object())
    return Evaluator(ctx).dir.replace(f"_c{test.digest()[:10]}", "")

  from fdjax.degradations.registry import get
  revision = get("rain").revision
  assert folder(("denoise", "rain")).endswith(f"_denoise-rain_rainr{revision}")
  assert folder(("denoise", "haze")).endswith("_bs3_denoise-haze")


def test_a_restoration_stage_trained_on_a_split_of_tiles_is_not_reused():
  # Runs before 2026-12-06 held out random tiles (their photos also gave training tiles):
  # a stage they recorded trained on other data, and must not be reused.
  import types
  from fdjax.config_restoration import restoration_config
  from fdjax.degradations.plan import LevelPlan
  from fdjax.study.runner import Stage

  config = restoration_config()
  dataset = types.SimpleNamespace(name="sets", content_digest=lambda names=(): "same",
                                  train=[0] * 4, validation=[0],
                                  train_pairs={})
  ctx = types.SimpleNamespace(config=config, dataset=dataset, seed=0,
                              plan=LevelPlan(("denoise",)))
  stage = Stage("experts/denoise", (), None, block="experts", levels=("denoise",))
  fields = fingerprint_fields.stage_fields(ctx, stage, {})
  recorded_before = json.loads(json.dumps(fields))
  del recorded_before["data"]["validation_unit"]
  assert fingerprint.differences(recorded_before, fields) == [
      "data.validation_unit: (absent) -> images"]
  config.data.validation_fraction = 0.0       # no validation split: nothing held out
  assert "validation_unit" not in fingerprint_fields.stage_fields(ctx, stage, {})["data"]


def test_the_references_cutout_fill_retrains_stages_trained_with_a_black_hole():
  # Runs before augment.cutout_fill trained with a black square: at 'black' their
  # records hold; at the default 'mean' (the reference's) their stages differ.
  from fdjax.config import base_config

  augment = base_config().augment.to_dict()
  before = {k: v for k, v in augment.items() if k != "cutout_fill"}
  assert augment["cutout_fill"] == "mean"
  assert fingerprint.differences({"augment": before}, fingerprint_fields.without_added(
      {"augment": augment})) == ["augment.cutout_fill: (absent) -> mean"]
  assert fingerprint_fields.without_added({"augment": {**augment, "cutout_fill": "black"}}) == {
      "augment": before}


def test_stages_trained_on_real_pairs_in_any_share_or_turned_sideways_are_not_reused():
  # Runs before 2026-12-07 put every degradation's real pairs in any share of a combined
  # batch and turned real pairs by 90 degrees: a stage that trained on real pairs then
  # trained on other data. Since 2026-12-06, night, shares without real pairs draw their
  # own permutations too: every stage of several shares changed. One-share stages
  # without real pairs keep their records.
  import types
  from fdjax.config_restoration import restoration_config
  from fdjax.degradations.plan import LevelPlan
  from fdjax.study.runner import Stage

  config = restoration_config()
  config.data.validation_fraction = 0.0
  dataset = types.SimpleNamespace(name="sets", content_digest=lambda names=(): "same",
                                  train=[0] * 4, validation=None,
                                  train_pairs={"rain": object()})
  ctx = types.SimpleNamespace(config=config, dataset=dataset, seed=0,
                              plan=LevelPlan(("denoise", "rain")),
                              degradations=("denoise", "rain"))
  stages = {"clean": Stage("clean", (), None, block="clean", shares=2),
            "ea_adam": Stage("ea_adam", (), None, block="ea_adam", shares=2, pairs=False),
            "experts/rain": Stage("experts/rain", (), None, block="experts", levels=("rain",)),
            "experts/denoise": Stage("experts/denoise", (), None, block="experts",
                                     levels=("denoise",))}
  fields = {n: fingerprint_fields.stage_fields(ctx, s, {}) for n, s in stages.items()}

  def before(f):   # what these fields were recorded as before the two options existed
    old = json.loads(json.dumps(f, default=str))
    old["data"].pop("share_pools", None)
    old["restoration"].pop("rotate_real", None)
    return old

  assert fingerprint.differences(before(fields["clean"]), fields["clean"]) == [
      "data.share_pools: (absent) -> own", "restoration.rotate_real: (absent) -> False"]
  assert fingerprint.differences(before(fields["experts/rain"]), fields["experts/rain"]) == [
      "restoration.rotate_real: (absent) -> False"]
  assert fingerprint.differences(before(fields["ea_adam"]), fields["ea_adam"]) == [
      "data.share_pools: (absent) -> own"]   # two shares, no real pairs
  assert fingerprint.differences(before(fields["experts/denoise"]),
                                 fields["experts/denoise"]) == []
  config.restoration.rotate_real = True    # the old augmentation: its records hold
  rain = fingerprint_fields.stage_fields(ctx, stages["experts/rain"], {})
  assert fingerprint.differences(before(rain), rain) == []
  config.restoration.update(rotate_real=False, rot90=False)   # nothing turned: no matter
  rain = fingerprint_fields.stage_fields(ctx, stages["experts/rain"], {})
  assert "rotate_real" not in rain["restoration"]


def test_a_retrain_cut_short_mid_delete_never_leaves_old_work_to_be_trusted(tmp_path,
                                                                             monkeypatch):
  # The delete of a stale stage is interrupted after removing its fingerprint but not its
  # variables: a stage folder with work and no record would be "made before
  # fingerprints" and trusted. The folder is renamed away first, so it is simply absent.
  import shutil
  real_rmtree = shutil.rmtree
  stage = tmp_path / "experts" / "rain"
  fingerprint.check_or_record(str(stage), "experts/rain", {"lr": 0.1})
  (stage / "variables").mkdir()
  (stage / "variables" / "w").write_text("old weights")

  def interrupted(path, ignore_errors=False):
    if os.path.exists(os.path.join(path, fingerprint.FILE)):
      os.remove(os.path.join(path, fingerprint.FILE))   # directory order: this went first
      raise KeyboardInterrupt
    real_rmtree(path, ignore_errors=ignore_errors)

  monkeypatch.setattr(fingerprint.shutil, "rmtree", interrupted)
  with pytest.raises(KeyboardInterrupt):
    fingerprint.check_or_record(str(stage), "experts/rain", {"lr": 0.2}, on_mismatch="retrain")
  monkeypatch.undo()
  assert not (stage / "variables").exists()
  fingerprint.check_or_record(str(stage), "experts/rain", {"lr": 0.2})   # a fresh record
  assert sorted(os.listdir(stage)) == [fingerprint.FILE]


def test_the_evaluation_cache_tells_apart_test_images_and_opt_in_metrics():
  # The Input row has no weights: its cached scores were served for a test set replaced
  # by other images of the same name, count and sizes, and without an added NIQE column.
  import types
  from fdjax.config_restoration import restoration_config
  from fdjax.data import ImageSet
  from fdjax.data.testsets import TestSet
  from fdjax.degradations.plan import LevelPlan
  from fdjax.study.evaluator import Evaluator
  from fdjax.tasks.restoration import RestorationTask

  def folder(value: int, extra=()):
    images = ImageSet.from_fields({"image": np.full((2, 4, 4, 3), value, np.uint8)})
    dataset = types.SimpleNamespace(test_sets={"clean": TestSet("set", (images,), ("a", "b"))})
    ctx = types.SimpleNamespace(config=restoration_config(), dataset=dataset, workdir="w",
                                plan=LevelPlan(("denoise",)),
                                task=RestorationTask(extra_metrics=tuple(extra)))
    return Evaluator(ctx).dir

  assert folder(1) == folder(1)
  assert folder(1) != folder(2)
  assert folder(1) != folder(1, ("niqe",))
  # several processes keep no per-image scores: a one-process run never reuses theirs
  from fdjax.study import evaluator
  one = folder(1)
  original = evaluator.jax.process_count
  evaluator.jax.process_count = lambda: 2
  try:
    assert folder(1) == one.replace("_denoise_t", "_denoise_p2_t")
  finally:
    evaluator.jax.process_count = original


def test_an_opt_in_metric_changes_no_stage_and_older_records_stay_the_same_stages():
  # NIQE (restoration.extra_metrics) is a reported column: adding it to a finished run
  # must re-evaluate, not refuse or retrain; records that held the option (rule 2) are
  # the same stages.
  import types
  from fdjax.config_restoration import restoration_config
  from fdjax.degradations.plan import LevelPlan
  from fdjax.study.runner import Stage

  config = restoration_config()
  dataset = types.SimpleNamespace(name="sets", content_digest=lambda names=(): "same",
                                  train=[0] * 4, validation=[0], train_pairs={})
  ctx = types.SimpleNamespace(config=config, dataset=dataset, seed=0,
                              plan=LevelPlan(("denoise",)), degradations=("denoise",))
  stage = Stage("experts/denoise", (), None, block="experts", levels=("denoise",))
  today = fingerprint_fields.stage_fields(ctx, stage, {})
  before, recorded = (fingerprint_fields.stage_fields(ctx, stage, {}, rule=r) for r in (1, 2))
  assert "extra_metrics" not in today["restoration"]
  assert fingerprint.differences(recorded, before) == [
      "restoration.extra_metrics:  -> (absent)"]
  assert 2 in fingerprint_fields.OLDER_RULES
  config.restoration.extra_metrics = "niqe"
  assert fingerprint_fields.stage_fields(ctx, stage, {}) == today


def test_ea_adam_stages_of_a_measnet_model_trained_without_its_balance_loss_retrain():
  # Before 2026-12-06, late night, EA-Adam's per-objective losses left out MEASNet's
  # balance loss (no gradient); a one-share ea_adam stage's other fields did not change.
  import types
  from fdjax.config_restoration import restoration_config
  from fdjax.degradations.plan import LevelPlan
  from fdjax.study.runner import Stage

  config = restoration_config()
  config.data.validation_fraction = 0.0
  dataset = types.SimpleNamespace(name="sets", content_digest=lambda names=(): "same",
                                  train=[0] * 4, validation=None, train_pairs={})
  ctx = types.SimpleNamespace(config=config, dataset=dataset, seed=0, plan=LevelPlan(("sr",)),
                              degradations=("sr",))
  stage = Stage("ea_adam", (), None, block="ea_adam", shares=1, pairs=False)
  config.restoration.model = "unet"
  assert "objective_regularizer" not in fingerprint_fields.stage_fields(ctx, stage, {})
  config.restoration.model = "measnet"
  fields = fingerprint_fields.stage_fields(ctx, stage, {})
  before = {k: v for k, v in json.loads(json.dumps(fields, default=str)).items()
            if k != "objective_regularizer"}
  assert fingerprint.differences(before, fields) == ["objective_regularizer: (absent) -> True"]


def test_model_options_as_a_string_keep_older_runs_and_mean_what_they_say():
  # Before 2026-12-07 the schema held model_options = 0 (and no command line could set
  # it); today '' (none) must fingerprint as 0, and 'k=1' as the dict it means.
  import types
  from fdjax.config_restoration import restoration_config
  from fdjax.degradations.plan import LevelPlan
  from fdjax.study.runner import Stage

  config = restoration_config()
  config.data.validation_fraction = 0.0
  dataset = types.SimpleNamespace(name="sets", content_digest=lambda names=(): "same",
                                  train=[0] * 4, validation=None, train_pairs={})
  ctx = types.SimpleNamespace(config=config, dataset=dataset, seed=0,
                              plan=LevelPlan(("denoise",)), degradations=("denoise",))
  stage = Stage("clean", (), None, block="clean")
  assert config.restoration.model_options == ""
  assert fingerprint_fields.stage_fields(ctx, stage, {})["restoration"]["model_options"] == 0
  config.restoration.update(model="measnet", model_options="num_experts=3, k=1")
  fields = fingerprint_fields.stage_fields(ctx, stage, {})
  assert fields["restoration"]["model_options"] == {"num_experts": 3, "k": 1}
  config.restoration.model_options = "k=1,num_experts=3"
  assert fingerprint.digest(fingerprint_fields.stage_fields(ctx, stage, {})) == fingerprint.digest(
      fields)


def test_an_edited_grid_enters_the_fingerprint_and_the_evaluation_cache(monkeypatch):
  # A grid edited in code (or a degradation added since grids entered fingerprints) must
  # not reuse what the old grid trained or scored; unedited grids add nothing, so runs
  # saved before keep their fingerprints and caches.
  import dataclasses
  import types
  import numpy as np
  from fdjax.config_restoration import restoration_config
  from fdjax.data import ImageSet
  from fdjax.degradations import registry
  from fdjax.degradations.plan import LevelPlan
  from fdjax.study.evaluator import Evaluator
  from fdjax.study.runner import Stage

  dataset = types.SimpleNamespace(name="sets", content_digest=lambda names=(): "same",
                                  train=[0] * 4, validation=None, train_pairs={},
                                  test_sets={},
                                  test=ImageSet(np.zeros((1, 4, 4, 3), np.uint8),
                                                np.zeros(1, np.int32)))

  def recorded():
    ctx = types.SimpleNamespace(config=restoration_config(), dataset=dataset, seed=0,
                                workdir="w", plan=LevelPlan(("denoise", "haze")),
                                task=object())
    stage = Stage("experts/haze", (), None, block="experts", levels=("haze",))
    return fingerprint_fields.stage_fields(ctx, stage, {}), Evaluator(ctx).dir

  fields, folder = recorded()
  assert "degradation_grids" not in fields and "_hazeg" not in folder
  haze = registry.REGISTRY["haze"]
  monkeypatch.setitem(registry.REGISTRY, "haze",
                      dataclasses.replace(haze, grid=tuple(np.round(np.arange(0, 21) * 0.1, 1))))
  edited, edited_folder = recorded()
  digest = registry.grid_digest(registry.REGISTRY["haze"].grid)
  assert fingerprint.differences(fields, edited) == [
      f"degradation_grids.haze: (absent) -> {digest}"]
  contents = f"_c{dataset.test.digest()[:10]}"   # the test split's digest comes last
  assert edited_folder == folder.replace(contents, f"_hazeg{digest}{contents}")
  # The same levels built another way (float error) keep the saved digest.
  rebuilt = dataclasses.replace(haze, grid=tuple(np.arange(31) * 0.1))
  assert registry.grid_digest(rebuilt.grid) == registry.SAVED_GRIDS["haze"]


def test_a_workdir_of_another_task_is_refused_before_anything_loads(tmp_path):
  """It listed 58 changed fields of stage 'clean' (the task not among the six shown) and
  offered --config.on_mismatch=retrain, which would retrain another task in that folder."""
  from fdjax import pipeline
  from fdjax.config_fields import check_workdir_task, load_config_file
  from fdjax.errors import ConfigError

  config = load_config_file(f"{Path(__file__).resolve().parents[1]}/configs/quickstart.py:tiny")
  (tmp_path / "config.json").write_text(json.dumps({"task": "restoration", "seeds": "0"}))
  with pytest.raises(ConfigError) as info:
    pipeline.run(config, str(tmp_path))
  assert str(info.value) == (f"--workdir {tmp_path} holds a restoration run (its config.json), "
                             "and this config's task is classification")
  assert info.value.hint == "use a new --workdir: a workdir holds the run of one task"
  assert sorted(os.listdir(tmp_path)) == [".fdjax.lock", "config.json"]
  (tmp_path / "config.json").write_text(json.dumps({"task": "classification"}))
  check_workdir_task(config, str(tmp_path))   # the same task: the fingerprints decide
  (tmp_path / "config.json").write_text("{damaged")
  check_workdir_task(config, str(tmp_path))   # left to the fingerprints too
