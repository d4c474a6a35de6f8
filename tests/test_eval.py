"""Acc(All) evaluation, fixed degradation keys, result tables and figures.

Closed-form references: fake predictors whose correctness is a known function of the
level, so every per-level accuracy and every Acc(All) has an exact expected value.
"""

import csv
import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fdjax import degradations
from fdjax.data import ImageSet
from fdjax.errors import DataError
from fdjax.eval import levels as levels_lib
from fdjax.eval import plots, report, report_files
from fdjax.eval.metric import split_scores
from fdjax.models import cifar_resnet
from fdjax.degradations.plan import LevelPlan, level_indices
from fdjax.tasks import ClassificationTask
from fdjax.train import init_variables

TASK = ClassificationTask(normalization="unit")

N, C, BATCH = 10, 3, 4  # 10 examples in batches of 4: the last batch has 2 padding rows

# Number of correct examples at a level, as an exact integer function of the level:
# example i is predicted correctly iff i < count(level).
COUNTS = {
    "jpeg": lambda q: min(N, math.ceil((q - 1) / 10)),   # q = 1..101 -> 0..10
    "blur": lambda s: min(N, round(2 * s)),               # sigma 0..5 -> 0..10 (no ties)
    "awgn": lambda s: min(N, math.ceil(s / 5)),           # sigma 0..50 -> 0..10
    "sapn": lambda d: min(N, round(40 * d)),              # density 0..0.25 -> 0..10 (no ties)
}
GRID_SIZES = {"jpeg": 101, "blur": 51, "awgn": 51, "sapn": 26}


def _jnp_count(name, level):
  """COUNTS in jax.numpy on float32 levels (all comparisons exact or tie-free)."""
  if name == "jpeg":
    return jnp.ceil((level - 1) / 10)
  if name == "blur":
    return jnp.round(2 * level)
  if name == "awgn":
    return jnp.ceil(level / 5)
  return jnp.round(40 * level)


def _index_split(n=N, size=4):
  """uint8 images whose pixel [0,0,0] is the example index; labels = index % C."""
  images = np.zeros((n, size, size, 3), np.uint8)
  images[:, 0, 0, 0] = np.arange(n)
  return ImageSet(images, (np.arange(n) % C).astype(np.int32))


def _logits_from(index, correct):
  """Logits predicting label (index % C) where ``correct`` else the next class."""
  label = index % C
  predicted = jnp.where(correct, label, (label + 1) % C)
  return jax.nn.one_hot(predicted, C)


def _closed_form_predict_fn(name):
  @jax.jit
  def predict_fn(variables, images, levels, key):
    del variables, key
    index = images[:, 0, 0, 0].astype(jnp.int32)
    return _logits_from(index, index < _jnp_count(name, levels))
  return predict_fn


def _pairs(name, levels):
  return list(zip([float(v) for v in levels], level_indices(name, levels)))


def _evaluate(split, name, predict_fn, levels=None, batch_size=BATCH, variables=None):
  levels = degradations.levels(name) if levels is None else levels
  return dict(levels_lib.evaluate_levels(TASK, predict_fn, variables, split, name,
                                         _pairs(name, levels), batch_size=batch_size, seed=301))


@pytest.mark.parametrize("name", ["jpeg", "blur", "awgn", "sapn"])
def test_acc_all_is_the_exact_mean_of_closed_form_per_level_accuracy(name):
  pairs = levels_lib.evaluate_levels(TASK, _closed_form_predict_fn(name), None, _index_split(),
                                     name, LevelPlan((name,)).eval_levels(name),
                                     batch_size=BATCH, seed=301)
  per_level = dict(pairs)
  grid = np.asarray(degradations.levels(name), np.float64)
  assert len(grid) == GRID_SIZES[name] and [p[0] for p in pairs] == [float(v) for v in grid]
  assert all(isinstance(p[0], float) for p in pairs)  # levels stay floats
  expected = {float(v): COUNTS[name](float(v)) / N for v in grid}
  assert per_level == expected  # exact: counts over 10 unpadded examples
  assert per_level[float(grid[0])] == 0.0 and per_level[float(grid[-1])] == 1.0
  assert levels_lib.mean_over_levels(pairs) == pytest.approx(
      sum(expected.values()) / GRID_SIZES[name], abs=1e-12)


def test_padding_is_masked():
  # Padding rows are all-zero images = "example 0", label 0, which this predictor gets
  # right at every level: counting them would give 12/12 instead of 10/10 or 6/12.
  split = _index_split(n=7)  # batches of 4: 4 + (3 real, 1 padded)

  def always_right(variables, images, levels, key):
    return _logits_from(images[:, 0, 0, 0].astype(jnp.int32), True)

  def only_zero_right(variables, images, levels, key):
    index = images[:, 0, 0, 0].astype(jnp.int32)
    return _logits_from(index, index == 0)

  kw = dict(name="awgn", levels=[0.0, 7.0])
  assert _evaluate(split, predict_fn=always_right, **kw) == {0.0: 1.0, 7.0: 1.0}
  assert _evaluate(split, predict_fn=only_zero_right, **kw) == {0.0: 1 / 7, 7.0: 1 / 7}


def test_each_level_array_is_placed_on_the_mesh_once_not_per_batch(monkeypatch):
  # With several processes every placement compares the array across hosts: 3 batches
  # x 2 levels place 2 arrays, and each batch still sees its own level.
  from fdjax.train import make_mesh

  calls = []
  real_put = jax.device_put
  monkeypatch.setattr(levels_lib.jax, "device_put",
                      lambda x, *a, **k: (calls.append(np.asarray(x)), real_put(x, *a, **k))[1])
  seen = []

  def record(variables, images, levels, key):
    seen.append(float(np.asarray(levels)[0]))
    return _logits_from(images[:, 0, 0, 0].astype(jnp.int32), True)

  pairs = _pairs("awgn", [0.0, 7.0])
  levels_lib.scores_at_levels(TASK, record, None, _index_split(), "awgn", pairs,
                              batch_size=BATCH, mesh=make_mesh(), seed=301)
  assert [float(c[0]) for c in calls if c.shape == (BATCH,) and c.dtype == np.float32] == [
      0.0, 7.0]
  assert seen == [0.0, 7.0] * 3


def test_stride_levels_keeps_both_ends():
  grid = np.arange(51) * 0.1
  np.testing.assert_allclose(levels_lib.stride_levels(grid, 1), grid)
  np.testing.assert_allclose(levels_lib.stride_levels(grid, 10), grid[[0, 10, 20, 30, 40, 50]])
  np.testing.assert_allclose(levels_lib.stride_levels(grid, 20), grid[[0, 20, 40, 50]])
  np.testing.assert_allclose(levels_lib.stride_levels(grid, 100), grid[[0, 50]])
  with pytest.raises(ValueError, match="not on the awgn grid"):
    level_indices("awgn", [0.5])


def test_subset_is_class_balanced_not_a_prefix():
  # Image-folder splits are sorted by class: a prefix would hold a single class.
  labels = np.repeat(np.arange(10, dtype=np.int32), 100)
  images = np.arange(1000, dtype=np.uint8).repeat(3 * 4).reshape(1000, 2, 2, 3)
  split = ImageSet(images, labels)
  sub = levels_lib.subset(split, 100)
  np.testing.assert_array_equal(np.bincount(sub.labels, minlength=10), np.full(10, 10))
  # Same subset every call, in split order, images still paired with their labels.
  again = levels_lib.subset(split, 100)
  np.testing.assert_array_equal(sub.labels, again.labels)
  np.testing.assert_array_equal(sub.images, again.images)
  assert np.all(np.diff(sub.labels) >= 0)
  assert levels_lib.subset(split, None) is split
  assert levels_lib.subset(split, 5000) is split


def test_eval_keys_are_fixed_and_distinct():
  key = levels_lib.eval_key(301, "awgn", 3, 2)
  np.testing.assert_array_equal(key, levels_lib.eval_key(301, "awgn", 3, 2))
  others = [levels_lib.eval_key(302, "awgn", 3, 2), levels_lib.eval_key(301, "sapn", 3, 2),
            levels_lib.eval_key(301, "awgn", 4, 2), levels_lib.eval_key(301, "awgn", 3, 1)]
  assert all(not np.array_equal(key, k) for k in others)


def _random_split(n, size, seed=0):
  rng = np.random.default_rng(seed)
  return ImageSet(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                  rng.integers(0, C, (n,), dtype=np.int32))


@pytest.mark.parametrize("name", ["awgn", "sapn"])
def test_every_method_sees_the_same_degraded_images(name):
  """Two "methods" (different predictors and variables) are handed the same keys, so the
  real degradation gives them bit-identical batches; repeating a run repeats its numbers."""
  split = _random_split(6, 8)
  levels = [float(v) for v in levels_lib.stride_levels(degradations.levels(name), 12)]
  degrade = jax.jit(degradations.apply, static_argnums=0)

  def recording(store):
    def predict_fn(variables, images, lv, key):
      degraded = degrade(name, key, images, jnp.asarray(lv))
      store.append(np.asarray(degraded))
      return variables["w"] * jnp.mean(degraded.astype(jnp.float32), axis=(1, 2))  # [B, 3]
    return predict_fn

  seen_a, seen_b, seen_a2 = [], [], []
  runs = [_evaluate(split, name, recording(store), levels=levels, batch_size=4,
                    variables={"w": w})
          for w, store in ((1.0, seen_a), (-1.0, seen_b), (1.0, seen_a2))]
  assert runs[0] == runs[2]
  assert len(seen_a) == len(seen_b) == len(seen_a2) == 2 * len(levels)  # 2 batches x levels
  for a, b, a2 in zip(seen_a, seen_b, seen_a2):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, a2)
  top = len(levels) - 1  # the strongest level really changes the images
  assert (seen_a[top][:4] != split.images[:4]).mean() > 0.05


def test_host_variables_go_to_the_devices_once_not_at_every_call(monkeypatch):
  # Variables read from disk are numpy: handed to the jitted predictors as they are, the
  # whole model went from host memory to every device at each batch of each level.
  from fdjax.train import make_mesh

  kinds = []

  def recording(make):
    def wrapped(*args, **kwargs):
      compiled = make(*args, **kwargs)

      def call(variables, *rest):
        kinds.extend(type(leaf) for leaf in jax.tree.leaves(variables))
        return compiled(variables, *rest)
      return call
    return wrapped

  monkeypatch.setattr(degradations, "apply", lambda name, key, images, levels: images)
  monkeypatch.setattr(levels_lib, "jit_clean", recording(levels_lib.jit_clean))
  monkeypatch.setattr(levels_lib, "with_degradation", recording(levels_lib.with_degradation))

  def predict(variables, images):
    index = images[:, 0, 0, 0].astype(jnp.int32)
    return _logits_from(index, index < variables["k"])

  host = {"k": np.asarray(6, np.int32), "w": np.zeros((64,), np.float32)}
  for mesh in (None, make_mesh()):
    kinds.clear()
    results = levels_lib.evaluate_all(TASK, host, _index_split(), LevelPlan(("awgn",), stride=25),
                                      batch_size=BATCH, predict=predict, mesh=mesh)
    assert results["clean"] == 0.6 and results["awgn"]["all"] == pytest.approx(0.6)
    assert len(kinds) == 2 * 3 * (1 + 3)   # 2 leaves, 3 batches, clean + 3 levels
    assert all(issubclass(kind, jax.Array) for kind in kinds), set(kinds)


def test_evaluate_all_structure_and_stride(monkeypatch):
  monkeypatch.setattr(degradations, "apply", lambda name, key, images, levels: images)

  def predict(variables, images):  # right on examples 0..5 of 10, whatever the level
    index = images[:, 0, 0, 0].astype(jnp.int32)
    return _logits_from(index, index < variables["k"])

  plan = LevelPlan(degradations.NAMES, stride=25)
  results = levels_lib.evaluate_all(TASK, {"k": 6}, _index_split(), plan, batch_size=BATCH,
                                    predict=predict)
  assert results["clean"] == 0.6
  for name in degradations.NAMES:
    grid = np.asarray(degradations.levels(name))
    levels = [p[0] for p in results[name]["per_level"]]
    assert levels == [float(v) for v in levels_lib.stride_levels(grid, 25)]
    assert levels[0] == float(grid[0]) and levels[-1] == float(grid[-1])
    assert results[name]["all"] == pytest.approx(0.6)
  assert results["avg"] == pytest.approx(0.6)
  few = levels_lib.evaluate_all(TASK, {"k": 6}, _index_split(), LevelPlan(("blur",), stride=50),
                                batch_size=BATCH, max_examples=5, predict=predict)
  chosen = levels_lib.subset(_index_split(), 5).images[:, 0, 0, 0]  # example indices
  assert len(chosen) == 5
  assert set(few) == {"clean", "blur", "avg"}
  assert few["clean"] == pytest.approx(np.mean(chosen < 6))
  assert [p[0] for p in few["blur"]["per_level"]] == [0.0, 5.0]
  # A restricted range: blur only up to sigma 3, evaluated at its ends and every 10th.
  plan = LevelPlan(("blur",), ranges=(("blur", 0.0, 3.0),), stride=10)
  part = levels_lib.evaluate_all(TASK, {"k": 6}, _index_split(), plan, batch_size=BATCH,
                                 predict=predict)
  assert [p[0] for p in part["blur"]["per_level"]] == pytest.approx([0.0, 1.0, 2.0, 3.0])


def test_split_scores_transforms_each_batch_by_its_index_and_masks_padding():
  """The one split scorer (model selection, greedy soups, fitness, tables): 10 examples in
  batches of 4 (the last with 2 padding rows), right iff the (transformed) pixel < 6."""

  @jax.jit
  def predict(variables, images):
    index = images[:, 0, 0, 0].astype(jnp.int32)
    return _logits_from(index, index < variables["k"])

  split, k = _index_split(), {"k": 6}
  assert split_scores(TASK, predict, k, split, batch_size=BATCH) == {"accuracy": 0.6}
  seen = []

  def shift(batch_index, images):  # batch b adds 3b (a multiple of C: labels still match)
    seen.append(batch_index)
    return images + jnp.uint8(3 * batch_index)

  # By hand: batch 0 -> 0,1,2,3 all right; batch 1 -> 7..10 and batch 2 -> 14,15 all
  # wrong (>= 6); the padding rows never count: 4 of 10.
  values = split_scores(TASK, predict, k, split, batch_size=BATCH, transform=shift,
                        metrics=("accuracy",))
  assert values == {"accuracy": 0.4} and seen == [0, 1, 2]
  # An empty split has no mean: an error, not {} (a KeyError later) or 0
  with pytest.raises(DataError, match="no image to score"):
    split_scores(TASK, predict, k, _index_split(0), batch_size=BATCH)


@pytest.mark.slow
def test_real_degradations_resnet8_end_to_end():
  """Real ``degradations.apply`` + ResNet-8 (random init) under one jit for every degradation."""
  model = cifar_resnet(8, C, "gap")
  variables = init_variables(model, jax.random.PRNGKey(0), (32, 32, 3))
  split = _random_split(16, 32, seed=1)
  task = ClassificationTask(normalization="cifar10")  # 16 = 6 + 6 + (4 real, 2 padded)
  results = levels_lib.evaluate_all(task, variables, split,
                                    LevelPlan(degradations.NAMES, stride=1000), batch_size=6,
                                    model=model)
  for name in degradations.NAMES:
    per_level = dict(results[name]["per_level"])
    grid = np.asarray(degradations.levels(name))
    assert list(per_level) == [float(grid[0]), float(grid[-1])]
    assert all(0.0 <= v <= 1.0 and (v * 16) % 1 == 0 for v in per_level.values())
  assert 0.0 <= results["clean"] <= 1.0
  assert results["avg"] == pytest.approx(np.mean([results[n]["all"]
                                                   for n in degradations.NAMES]))
  # The clean end of each grid is the clean image set (jpeg q=101, sigma 0, density 0).
  for name in degradations.NAMES:
    assert dict(results[name]["per_level"])[degradations.clean_level(name)] == results["clean"]


# ------------------------------------------------------------------ reports and plots
REPORT_LEVELS = {"jpeg": [1.0, 51.0, 101.0], "blur": [0.0, 5.0], "awgn": [0.0, 50.0],
                 "sapn": [0.0, 0.25]}


def _fake_results(base):
  """evaluate_all-shaped results with per-level accuracy = base - 0.01 * position."""
  results = {"clean": base}
  for name, lv in REPORT_LEVELS.items():
    per_level = [[v, base - 0.01 * i] for i, v in enumerate(lv)]
    results[name] = {"all": float(np.mean([p[1] for p in per_level])),
                     "per_level": per_level}
  results["avg"] = float(np.mean([results[n]["all"] for n in REPORT_LEVELS]))
  return results


@pytest.fixture
def records():
  return [("experts", 0, _fake_results(0.80)), ("fusion", 0, _fake_results(0.70)),
          ("fusion", 1, _fake_results(0.73)), ("clean", 0, _fake_results(0.90)),
          ("clean", 1, _fake_results(0.92))]


def test_reports_tables_and_files(records, tmp_path):
  order = ["clean", "experts", "fusion"]
  extra = {"fusion": {"params": 272474, "rel. cost": 1.0}}
  paths = report_files.write_reports(records, str(tmp_path), methods=order, extra=extra,
                               note="Model selection: last checkpoint.")
  with open(paths["csv"]) as f:
    rows = list(csv.DictReader(f))
  assert [r["method"] for r in rows] == order
  assert list(rows[0]) == ["method", "seeds", "clean", "clean_std", "jpeg", "jpeg_std", "blur",
                           "blur_std", "awgn", "awgn_std", "sapn", "sapn_std", "avg", "avg_std",
                           "params", "rel. cost"]
  fusion = rows[2]
  for col in ("clean", "jpeg", "avg"):
    values = [100 * report.column_value(r, col) for m, _, r in records if m == "fusion"]
    assert float(fusion[col]) == pytest.approx(round(np.mean(values), 1))
    assert float(fusion[f"{col}_std"]) == pytest.approx(round(np.std(values, ddof=1), 1))
  assert rows[1]["seeds"] == "1" and rows[1]["clean"] == "80.0" and rows[1]["clean_std"] == ""
  assert fusion["params"] == "272474" and rows[0]["params"] == ""

  table = report.format_table(records, order, extra)
  md = open(paths["md"]).read()
  assert md.endswith("\n\nModel selection: last checkpoint.\n")   # the note, last
  assert table == md.split("\n\n", 1)[1].split("\n\nModel selection")[0].rstrip("\n")
  # The header names the stride's config field as a user would set it (it said
  # config.level_stride, an unknown field).
  from fdjax.config import base_config
  header = " ".join(open(paths["md"]).read().split("\n\n", 1)[0].split())
  field = re.search(r"config\.([\w.]+) > 1", header).group(1)
  node = base_config()
  for part in field.split("."):
    node = node[part]
  lines = table.splitlines()
  assert lines[0] == ("| method | seeds | clean | jpeg | blur | awgn | sapn | avg | params "
                      "| rel. cost |")
  assert lines[2].startswith("| clean | 2 | 91.0 ± 1.4 |")  # std([90, 92], ddof=1) = 1.41
  assert lines[3].startswith("| experts | 1 | 80.0 | 79.0 |")  # plain mean, one seed
  assert lines[4].endswith("| 272,474 | 1 |")

  with open(paths["per_level"]) as f:
    per_level = list(csv.DictReader(f))
  n_levels = sum(len(v) for v in REPORT_LEVELS.values())
  assert len(per_level) == len(records) * n_levels  # (method, seed) pairs x levels
  assert list(per_level[0]) == ["method", "seed", "degradation", "level", "normalised_level",
                                "accuracy"]
  jpeg = [r for r in per_level if r["degradation"] == "jpeg"][:3]
  assert [float(r["normalised_level"]) for r in jpeg] == [
      float(degradations.normalised_level("jpeg", q)) for q in REPORT_LEVELS["jpeg"]]
  assert float(jpeg[0]["normalised_level"]) == 99.0  # 100 - quality
  assert float(jpeg[0]["accuracy"]) == pytest.approx(80.0)

  payload = json.load(open(paths["json"]))
  assert payload["std_ddof"] == 1 and payload["methods"] == order
  assert payload["summary"]["fusion"]["avg"]["values"] == pytest.approx(
      [100 * records[1][2]["avg"], 100 * records[2][2]["avg"]])
  assert report_files.load_records(paths["json"]) == records


def _assert_png(path, min_w=300, min_h=200):
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    assert image.format == "PNG" and image.width >= min_w and image.height >= min_h


def test_plots_are_valid_pngs(records, tmp_path):
  paths = plots.plot_metric_vs_level(report.per_level_rows(records), str(tmp_path / "fig3"),
                                     methods=["clean", "experts", "fusion"])
  assert sorted(p.rsplit("/", 1)[1] for p in paths) == sorted(
      f"accuracy_{n}.png" for n in REPORT_LEVELS)
  for path in paths:
    _assert_png(path)
  std_paths = plots.plot_metric_vs_level(records, str(tmp_path / "std"), band="std")
  assert len(std_paths) == 4
  matrix = np.array([[0.9, 0.5, 0.4, 0.3], [0.4, 0.8, 0.3, 0.2], [0.5, 0.4, 0.85, 0.6],
                     [0.45, 0.35, 0.55, 0.88]])
  path = plots.plot_expert_heatmap(matrix, ["jpeg", "blur", "awgn", "sapn"],
                                   ["jpeg", "blur", "awgn", "sapn"], str(tmp_path / "heat.png"))
  _assert_png(path)


def test_one_compiled_predictor_serves_every_degradation():
  """``with_degradations``: the degradation is a traced index, so evaluating a model under
  four degradations compiles once; each branch gives exactly ``degradations.apply``."""
  names = ("jpeg", "blur", "awgn", "sapn")
  images = jnp.asarray(np.random.default_rng(5).integers(0, 256, (4, 16, 16, 3)), jnp.uint8)
  levels = jnp.asarray([10.0, 1.5, 20.0, 0.1], jnp.float32)
  key = jax.random.PRNGKey(7)

  def identity(variables, degraded):  # the "model" returns what it was given
    return degraded

  switched = levels_lib.with_degradations(identity, names, None)  # the memoised program
  for i, name in enumerate(names):
    got = levels_lib.with_degradation(identity, name, names=names)(None, images, levels, key)
    expected = jax.jit(lambda k, x, l: degradations.apply(name, k, x, l))(key, images, levels)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected), err_msg=name)
    assert not np.array_equal(np.asarray(got), np.asarray(images)), name
  assert switched._cache_size() == 1


def test_extra_columns_over_seeds_are_merged_not_the_last_seeds():
  """A column every seed shares stays; differing floats (routing accuracy) are their mean
  over the seeds, like the metric columns; differing labels (EA-Adam's best member, the
  fusion network's alpha) list each seed's."""
  seed0 = {"MoE (K=1)": {"params": 340715, "routing acc.": 13.2}, "EA best": {"member": 1},
           "Fusion": {"alpha": "0.9/0.1"}}
  seed1 = {"MoE (K=1)": {"params": 340715, "routing acc.": 24.1}, "EA best": {"member": 3},
           "Fusion": {"alpha": "0.9/0.1"}}
  merged = report.merge_extra([seed0, seed1])
  assert merged["MoE (K=1)"]["params"] == 340715
  assert merged["MoE (K=1)"]["routing acc."] == pytest.approx((13.2 + 24.1) / 2)
  assert merged["EA best"]["member"] == "1/3"
  assert merged["Fusion"]["alpha"] == "0.9/0.1"
  assert report.merge_extra([seed0]) == seed0 and report.merge_extra([]) == {}


def test_a_single_level_plots_as_a_point_and_eleven_rows_get_eleven_colours(tmp_path,
                                                                           monkeypatch):
  # A one-point line without a marker draws nothing (the haze and x4 SR plots were
  # empty); tab10 gave the 11th row the first row's colour.
  figures = []
  plt = plots.pyplot()
  real_subplots = plt.subplots
  monkeypatch.setattr(plt, "subplots",
                      lambda *a, **k: figures.append(real_subplots(*a, **k)) or figures[-1])
  rows = [{"method": f"m{i}", "seed": 0, "degradation": "awgn", "level": 10.0,
           "normalised_level": 10.0, "value": 50.0 + i} for i in range(11)]
  plots.plot_metric_vs_level(rows, str(tmp_path))
  lines = figures[0][1].lines
  assert len(lines) == 11 and all(line.get_marker() == "o" for line in lines)
  assert len({line.get_color() for line in lines}) == 11


def test_a_partly_scored_test_set_says_so_in_its_column_and_the_test_sets_line():
  results = {"clean": 0.9, "avg": 0.5,
             "rain": {"all": 0.5, "per_level": [], "test_set": "rain100l", "synthetic": False,
                      "scored": [24, 100]}}
  records = [("fusion", 0, results)]
  assert report.column_label(records, "rain") == "rain (rain100l, first 24 of 100, real)"
  assert report.test_sets(records) == {"rain": {"test_set": "rain100l", "synthetic": False,
                                                "scored": [24, 100]}}
