"""End to end: ``python -m fdjax.main`` on the quickstart (tiny variant, two of its four
degradations to keep the suite fast: every stage and row still runs) produces every output
the study promises; ``fdjax.load_model`` loads its models; bad flags fail clearly."""

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import pytest

import fdjax
from fdjax.data import load
from fdjax.errors import DataError, UserError

REPO = Path(__file__).resolve().parents[1]
# One persistent compilation cache for this module's runs (fdjax.xla_cache): the reruns
# load the steps and predictors the first run compiled, as a user's reruns do.
XLA_CACHE = tempfile.mkdtemp(prefix="fdjax-test-xla-")
atexit.register(shutil.rmtree, XLA_CACHE, ignore_errors=True)


def run_main(*args, timeout=900, **env_vars):
  env = dict(os.environ, JAX_PLATFORMS="cpu", **env_vars)
  return subprocess.run([sys.executable, "-m", "fdjax.main", f"--xla_cache={XLA_CACHE}", *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


# Two degradations instead of four (half the experts and half of every combined batch)
# and one of the three plain fine-tuning rows (Scratch and Fusing are Vanilla FT's code
# from other starting points: tests/test_study.py): the suite's time budget.
DEGRADATIONS = ("jpeg", "blur")
TINY = ("--config=configs/quickstart.py:tiny", "--config.degradations=" + ",".join(DEGRADATIONS))
METHODS = "--config.methods=oracle,ensemble,vanilla,modelsoups,fusiondistill"


def run_data(workdir):
  """The run's own data set (source and subset from its config.json)."""
  data = json.loads((workdir / "config.json").read_text())["data"]
  return load(data["source"], max_per_split=data["max_per_split"])


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("quickstart")
  # An empty matplotlib folder, as on a fresh machine: its first import builds the font
  # cache and logs that at INFO (test_quickstart_writes_every_output checks the console).
  mpl_config = tmp_path_factory.mktemp("matplotlib")
  result = run_main(*TINY, METHODS, f"--workdir={workdir}", MPLCONFIGDIR=str(mpl_config))
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
  return workdir, result.stdout, result.stderr


def test_quickstart_writes_every_output(quickstart_run):
  workdir, stdout, stderr = quickstart_run
  for name in ("results.csv", "results.md", "results.json", "per_level.csv", "config.json",
               "run.json", "expert_heatmap.png", "accuracy_jpeg.png", "accuracy_blur.png"):
    assert (workdir / name).is_file(), name
  seed_dir = workdir / "seed_0"
  assert not (workdir / "accuracy_awgn.png").exists()
  for stage in ("clean", "experts/jpeg", "experts/blur",
                "fused/paper", "fused/average", "fused/reestimate", "fusiondistill", "vanilla"):
    assert (seed_dir / stage / "variables").is_dir(), stage
  assert not (seed_dir / "scratch").exists() and not (seed_dir / "fusing").exists()
  for row in ("Oracle", "Ensemble", "Vanilla FT", "ModelSoups (BN paper)",
              "ModelSoups (BN average)", "ModelSoups (BN reestimate)", "FusionDistill"):
    assert row in stdout and row in (workdir / "results.md").read_text()
  assert "Model selection: last checkpoint" in stdout
  # The table says what its numbers are, then where the files are.
  assert "Top-1 accuracy (%), higher is better" in stdout
  assert f"Files in {workdir}:" in stdout and "results.md" in stdout.split("Files in")[1]
  # fdjax's own lines only: no orbax chatter at the default verbosity; a study progress line.
  assert "orbax" not in stderr and "study: stage" in stderr
  # ...and every INFO line is fdjax's, with the time alone in front (fdjax.console: another
  # library's record names its logger; matplotlib's "generated new fontManager" on a fresh
  # machine was one), absl's prefix ("I1207 08:41:38.646699 1400959507 progress.py:98]") gone.
  lines = stderr.splitlines()
  assert sum(bool(re.match(r"\d\d:\d\d:\d\d \[clean\] step ", line)) for line in lines) >= 1
  assert not [line for line in lines if re.match(r"\d\d:\d\d:\d\d (info|debug) \(", line)]
  assert not [line for line in lines if re.match(r"[IWE]\d{4} ", line)]
  header = (workdir / "results.csv").read_text().splitlines()[0]
  for column in ("clean", "jpeg", "blur", "avg"):
    assert column in header.split(",")
  assert "awgn" not in header.split(",")


def test_a_refused_run_changes_nothing_and_checks_every_seed_before_training(quickstart_run):
  """Every seed's stages are checked before any trains (seed 1 is new here and would have
  trained first), and a refused run leaves config.json, which fdjax.load_model builds
  the run's models from, as it was."""
  import ml_collections
  from fdjax import pipeline
  from fdjax.study.fingerprint import FingerprintMismatchError

  workdir = quickstart_run[0]
  before = (workdir / "config.json").read_bytes()
  config = ml_collections.ConfigDict(json.loads(before))
  config.clean.optimizer.lr = 0.123   # every stage's fingerprint changes
  config.seeds = "1,0"
  with pytest.raises(FingerprintMismatchError, match="seed_0"):
    pipeline.run(config, str(workdir))
  assert (workdir / "config.json").read_bytes() == before
  assert [p.name for p in (workdir / "seed_1").rglob("*") if p.is_file()] and all(
      p.name == "fingerprint.json" for p in (workdir / "seed_1").rglob("*") if p.is_file())
  fdjax.load_model(str(workdir), "fusiondistill")   # still the run's models
  shutil.rmtree(workdir / "seed_1")


def _own_copy(workdir, tmp_path):
  """A copy of the module's run for a test that reruns it with other methods or settings:
  a rerun rewrites results.json, run.json and config.json, which later tests read."""
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  return copy


@pytest.mark.long
def test_rerun_reuses_finished_stages_and_adds_a_moe_student(quickstart_run, tmp_path):
  """The MoE method ALONE: it must build (here: reuse) the experts and fused model."""
  workdir = _own_copy(quickstart_run[0], tmp_path)
  before = {stage: (workdir / "seed_0" / stage / "metrics.jsonl").read_text()
            for stage in ("clean", "experts/jpeg", "fusiondistill")}
  result = run_main(*TINY, f"--workdir={workdir}",
                    "--config.methods=fusiondistill_moe,routed_experts", "--config.moe.ks=1")
  assert result.returncode == 0, result.stderr[-3000:]
  for stage, text in before.items():
    assert (workdir / "seed_0" / stage / "metrics.jsonl").read_text() == text, stage
  assert "Ensemble" not in result.stdout and "Scratch" not in result.stdout
  # The MoE row with its cost columns, trained from the reused experts and fused model.
  assert "FusionDistill-MoE (K=1)" in result.stdout and "FLOPs/img (rel.)" in result.stdout
  assert "Routed experts" in result.stdout and "routing acc. (non-clean)" in result.stdout
  assert (workdir / "seed_0" / "fusiondistill_moe" / "variables").is_dir()
  usage = (workdir / "router_usage.md").read_text()
  assert "| jpeg |" in usage and "expert 1:blur" in usage
  assert "routing acc. non-clean" in usage and "level >= 90" in usage
  assert (workdir / "router_usage_k1.png").is_file()
  assert (workdir / "router_accuracy.png").is_file()
  restored = fdjax.load_model(str(workdir), "fusiondistill_moe", k=1)
  logits = np.asarray(restored.predict(run_data(workdir).test.images[:8]))
  assert logits.shape == (8, 10) and np.all(np.isfinite(logits))


def test_a_stage_loads_with_the_config_it_was_made_with(quickstart_run, tmp_path):
  """A later run on the workdir with other methods rewrites the run's config.json (here:
  another input normalization, which changes no stage it plans); the stages it left
  must still load as they were trained, from the config recorded beside them."""
  workdir = _own_copy(quickstart_run[0], tmp_path)
  config = json.loads((workdir / "config.json").read_text())
  assert config["data"]["normalization"] == "unit"
  config["data"]["normalization"] = "cifar10"    # what such a later run writes
  (workdir / "config.json").write_text(json.dumps(config))
  restored = fdjax.load_model(str(workdir), "fusiondistill")
  assert restored.config.data.normalization == "unit"
  data = run_data(workdir)
  (result_path,) = (workdir / "seed_0" / "eval").glob("*/fusiondistill-*.json")
  accuracy = np.mean(np.asarray(restored.predict(data.test.images)).argmax(-1) == data.test.labels)
  assert abs(accuracy - json.loads(result_path.read_text())["clean"]) < 1e-6


def test_load_model_takes_the_rows_of_the_results_table(quickstart_run):
  # As a person copies a row from results.md; each loads the same file as its model name.
  workdir = quickstart_run[0]
  rows = set(json.loads((workdir / "results.json").read_text())["summary"])
  expected = {"FusionDistill": "fusiondistill", "Vanilla FT": "vanilla",
              "ModelSoups (BN paper)": "modelsoups_paper",
              "ModelSoups (BN average)": "modelsoups_average",
              "ModelSoups (BN reestimate)": "modelsoups_reestimate"}
  assert set(expected) <= rows
  for row, name in expected.items():
    assert fdjax.load_model(str(workdir), row).path == fdjax.load_model(str(workdir), name).path
  assert fdjax.load_model(str(workdir), "FusionDistill").name == "fusiondistill"
  # A MoE row carries its K, which must agree with an explicit one.
  from fdjax import methods
  assert methods.model_name("FusionDistill-MoE (K=2)") == ("fusiondistill_moe", 2)
  assert methods.model_name("All-in-one (scratch)") == ("scratch", None)
  with pytest.raises(ValueError, match="is K=2 but k=1"):
    methods.model_name("FusionDistill-MoE (K=2)", k=1)
  for row in ("Oracle", "Ensemble"):
    assert row in rows
    with pytest.raises(ValueError, match=f"no single model for row '{row}': .*expert_"):
      fdjax.load_model(str(workdir), row)
  with pytest.raises(ValueError, match="no single model for method 'Fusion' \\(did you mean "
                                       "'fusiondistill'\\?\\); run .* has clean, expert_blur, "
                                       "expert_jpeg"):
    fdjax.load_model(str(workdir), "Fusion")
  # no near name: every loadable name (it said only "run ... has no finished model" there)
  with pytest.raises(ValueError, match="no single model for method 'bogus'; choose from "
                                       "\\[.*'fusiondistill'.*'expert_<degradation>'\\]; "
                                       "run .* has clean"):
    fdjax.load_model(str(workdir), "bogus")


def test_load_model_gives_a_working_predict(quickstart_run):
  workdir = quickstart_run[0]
  restored = fdjax.load_model(str(workdir), "fusiondistill")
  # placed on the device once, not copied from the host at every predict
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(restored.variables))
  data = run_data(workdir)
  logits = np.asarray(restored.predict(data.test.images[:64]))
  assert logits.shape == (64, 10) and np.all(np.isfinite(logits))
  # The restored model agrees with the accuracy the run itself reported (same test images).
  (result_path,) = (workdir / "seed_0" / "eval").glob("*/fusiondistill-*.json")
  results = json.loads(result_path.read_text())
  all_logits = np.asarray(restored.predict(data.test.images))
  accuracy = float(np.mean(all_logits.argmax(-1) == data.test.labels))
  assert abs(accuracy - results["clean"]) < 1e-6
  # Images the classifier was not trained on are refused, not answered.
  images = data.test.images[:2]
  h, w = images.shape[1:3]
  for bad, given in [(np.zeros((2, h * 2, w * 2, 3), np.uint8), f"[2, {2 * h}, {2 * w}, 3]"),
                     (images[..., :1], f"[2, {h}, {w}, 1]"),
                     (images.astype(np.float32), "float32"), (images[0], f"[{h}, {w}, 3]")]:
    with pytest.raises(DataError, match=rf"\[B, {h}, {w}, 3\].*{re.escape(given)}"):
      restored.predict(bad)
  with pytest.raises(ValueError, match="no single model"):
    fdjax.load_model(str(workdir), "ensemble")
  with pytest.raises(UserError, match="has no K"):   # said before k's range is checked
    fdjax.load_model(str(workdir), "fusiondistill", k=5)
  for k in ("2", True, 1.0):   # a string, a bool and a float were taken, or a TypeError
    with pytest.raises(UserError, match="k must be an integer"):
      fdjax.load_model(str(workdir), "fusiondistill_moe", k=k)
  with pytest.raises(FileNotFoundError, match="config.json"):
    fdjax.load_model(str(workdir / "seed_0"), "fusiondistill")
  # The old name still works, with a deprecation warning.
  with pytest.warns(DeprecationWarning, match="load_model"):
    old = fdjax.restore(str(workdir), "expert_blur")
  assert old.path.endswith(os.path.join("experts", "blur", "variables"))


def test_the_hint_for_a_model_the_run_lacks_reruns_its_command_with_every_method(
    quickstart_run):
  """The command recorded in run.json, the workdir as given, the run's methods kept (a run
  of the missing method alone would write a results table of that row alone)."""
  from fdjax.load import ModelNotInRunError, rerun_command
  workdir = quickstart_run[0]
  command = json.loads((workdir / "run.json").read_text())["command"]
  assert command.startswith("python -m fdjax.main ") and " ".join(TINY) in command
  with pytest.raises(ModelNotInRunError) as error:
    fdjax.load_model(str(workdir), "scratch")
  expected = (f"python -m fdjax.main --xla_cache={XLA_CACHE} {' '.join(TINY)} "
              f"--workdir={workdir} {METHODS},scratch")
  assert error.value.hint == f"train it with {expected}"
  config = {"methods": "oracle,vanilla"}
  (workdir / "moved").mkdir(exist_ok=True)
  (workdir / "moved" / "run.json").write_text(json.dumps(
      {"command": "python -m fdjax.main --config configs/q.py:tiny --workdir old "
                  "--config.methods oracle --time_limit=15s --config.seeds=0,1 --time_limit "
                  "1h"}))
  assert rerun_command(str(workdir / "moved"), config, "scratch") == (
      f"python -m fdjax.main --config configs/q.py:tiny --config.seeds=0,1 "
      f"--workdir={workdir / 'moved'} --config.methods=oracle,vanilla,scratch")
  for run_info in ({}, {"command": "python -m fdjax.main --config 'q.py"}):
    # a run of before 2026-12-07; a hand-edited command with unbalanced quotes
    (workdir / "moved" / "run.json").write_text(json.dumps(run_info))
    assert rerun_command(str(workdir / "moved"), config, "vanilla") == (
        f"python -m fdjax.main --config=<the run's config file> --workdir={workdir / 'moved'} "
        f"--config.methods=oracle,vanilla")


def _one_line_error(result, *needles):
  assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
  lines = [l for l in result.stderr.splitlines() if l.startswith(("error:", "hint:"))]
  assert lines and lines[0].startswith("error:"), result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], (needle, lines)
  return lines


def test_a_workdir_or_cache_that_is_a_file_fails_clearly(tmp_path):
  (tmp_path / "a_file").write_text("")
  # '~' expanded (the shell leaves '--workdir=~/...' alone): it made a literal '~' folder
  result = run_main("--config=configs/quickstart.py:tiny", "--workdir=~/a_file",
                    timeout=120, HOME=str(tmp_path))
  _one_line_error(result, f"--workdir {tmp_path / 'a_file'} is a file, not a folder")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-m", "fdjax.main", "--config=configs/quickstart.py",
                           f"--workdir={tmp_path / 'w'}", f"--xla_cache={tmp_path / 'a_file'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  _one_line_error(result, "--xla_cache", "is a file, not a folder")


@pytest.mark.parametrize("args, needles", [
    (("--config=configs/quickstart.py:tiny,bogus",),
     ("--config=configs/quickstart.py:tiny,bogus", "unknown quickstart variant(s) ['bogus']")),
    (("--config=configs/quickstart.py:tiny", "--config.clean.epochs=2.5"),
     ("--config.clean.epochs=2.5", "invalid literal for int()")),
    (("--config=configs/restoration_quickstart.py:tiny", "--config.restoration.rotate_real=x"),
     ("--config.restoration.rotate_real=x: a boolean takes true or false, got 'x'",)),
    (("--config=configs/quickstart.py:tiny", "--config.methods.x=1"),
     ("unknown config field 'methods.x'",)),
    (("--config=configs/quickstrat.py:tiny",),   # ml_collections: two tracebacks, status 1
     ("config file configs/quickstrat.py not found", "did you mean configs/quickstart.py")),
    (("--config=configs",), ("config file configs is a folder",)),
])
def test_flags_absl_or_the_config_file_reject_are_one_line_errors(tmp_path, args, needles):
  """Not absl's 'FATAL Flags parsing error' with the config file's traceback, status 1."""
  lines = _one_line_error(run_main(*args, f"--workdir={tmp_path}", timeout=120), *needles)
  if "flag --config." in lines[0]:   # a field's value: --helpshort lists no config field
    assert lines[-1].startswith("hint: the config file's get_config()"), lines


def test_unknown_config_key_fails_clearly(tmp_path):
  result = run_main("--config=configs/quickstart.py", f"--workdir={tmp_path}",
                    "--config.clean.epochz=3", timeout=120)
  _one_line_error(result, "unknown config field 'clean.epochz'", "clean.epochs")


def test_bad_values_fail_before_any_training(tmp_path):
  """A bad degradation name and a negative epoch count stop the run before the first
  step, with one line naming the field; nothing is trained or written."""
  result = run_main("--config=configs/quickstart.py:tiny", f"--workdir={tmp_path / 'w'}",
                    "--config.degradations=jpeg,fog", "--config.scratch.epochs=-1",
                    timeout=120)
  _one_line_error(result, "fog", "scratch.epochs")
  assert not (tmp_path / "w").exists()


def test_unknown_method_fails_clearly(tmp_path):
  result = run_main("--config=configs/quickstart.py:tiny", f"--workdir={tmp_path}",
                    "--config.methods=fusiondistill,magic", timeout=120)
  _one_line_error(result, "magic", "fusiondistill")


@pytest.mark.long
def test_changed_config_is_refused_then_retrained(quickstart_run, tmp_path):
  """A finished stage whose config changed is not reused: one line names the stage and
  the field; on_mismatch=retrain retrains it (and only what depends on it)."""
  workdir = _own_copy(quickstart_run[0], tmp_path)
  args = [*TINY, f"--workdir={workdir}", "--config.methods=vanilla",
          "--config.vanilla.optimizer.lr=0.002"]
  refused = run_main(*args, timeout=300)
  _one_line_error(refused, "stage 'vanilla'", "block.optimizer.lr: 0.001 -> 0.002")
  before = (workdir / "seed_0" / "clean" / "metrics.jsonl").read_text()
  retrained = run_main(*args, "--config.on_mismatch=retrain", timeout=600)
  assert retrained.returncode == 0, retrained.stderr[-3000:]
  assert (workdir / "seed_0" / "clean" / "metrics.jsonl").read_text() == before
  fingerprint = json.loads((workdir / "seed_0" / "vanilla" / "fingerprint.json").read_text())
  assert fingerprint["fields"]["block"]["optimizer"]["lr"] == 0.002
  results = json.loads((workdir / "results.json").read_text())
  assert results["fingerprints"]["seed_0"]["vanilla"] == fingerprint["digest"]


def test_a_second_run_on_a_locked_workdir_fails_at_once(tmp_path):
  from fdjax.lock import workdir_lock

  with workdir_lock(str(tmp_path)):
    result = run_main("--config=configs/quickstart.py:tiny", f"--workdir={tmp_path}",
                      timeout=120)
  _one_line_error(result, "in use by PID", str(os.getpid()))


@pytest.mark.parametrize("overrides, needle", [
    (dict(selection="val", methods="scratch"), "selection='val' needs a validation split"),
    (dict(fusion__soup="greedy", methods="modelsoups"), "fusion.soup='greedy' needs"),
])
def test_choices_made_on_validation_need_a_validation_split(tmp_path, overrides, needle):
  """Refused before anything trains (selection='val' silently used the last epoch while
  the table said 'best epoch on the held-out validation split'; the greedy soup crashed
  after the experts had trained)."""
  from fdjax import pipeline
  from fdjax.config_fields import load_config_file
  from fdjax.errors import ConfigError

  config = load_config_file(str(REPO / "configs" / "quickstart.py") + ":tiny")
  config.data.validation_fraction = 0.0
  for dotted, value in overrides.items():
    block, _, field = dotted.rpartition("__")
    (config[block] if block else config)[field] = value
  with pytest.raises(ConfigError, match=re.escape(needle)):
    pipeline.run(config, str(tmp_path))
  assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name not in (
      "fingerprint.json", ".fdjax.lock")], sorted(tmp_path.rglob("*"))


def test_a_stage_s_recorded_config_is_its_own_never_an_upstream_one(tmp_path):
  """EA-Adam's merged models live in sub-folders of their stage (ea_adam/merged/<kind>);
  the search for their config stops at that stage: the upstream ea_adam's config.json is
  rewritten by any later run that reuses it."""
  from fdjax.load import recorded_config
  seed = tmp_path / "seed_0"
  (seed / "ea_adam" / "merged" / "best" / "variables").mkdir(parents=True)
  (seed / "ea_adam" / "config.json").write_text(json.dumps({"tag": "upstream"}))
  path = str(seed / "ea_adam" / "merged" / "best" / "variables")
  assert recorded_config(str(tmp_path), 0, path, "ea_adam/merged") is None
  (seed / "ea_adam" / "merged" / "config.json").write_text(json.dumps({"tag": "own"}))
  assert recorded_config(str(tmp_path), 0, path, "ea_adam/merged").tag == "own"
