"""EA-Adam's static rows load from a finished run: ``fdjax.load_model`` and
``fdjax.predictor.load_predictor`` of the best member, both averages and the baked fusion
network reproduce the clean accuracy the run reported for that row on the same test
images, and each equals its closed form over the members (the best one, the mean, the
metric-weighted mean, the mixture by the baked mixing weights); the population and the
dynamic network are refused naming what to load; a second run reuses the saved models.

The default test builds the merging stages (``ea_adam/merged``, ``ea_adam_fusion/baked``)
and rows for real on a digits subset, with a one-convolution network instead of the
ResNet and the trained stages (clean, the population, the fusion predictor) replaced by
initialised variables; the long test runs the whole tiny study through
``fdjax.pipeline.run`` (about a minute on a loaded 2-core CPU)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fdjax
from fdjax import data as data_lib
from fdjax import methods as methods_lib
from fdjax import pipeline
from fdjax.config_fields import load_config_file
from fdjax.methods import ea_adam
from fdjax.population.fusion_net import MixingPredictor
from fdjax.population.state import stack_members
from fdjax.study import make_context
from fdjax.study.runner import Runner, Stage
from fdjax.predictor import load_predictor
from fdjax.tasks.classification import ClassificationTask
from fdjax.train.variables_io import load_variables

from test_population_method import QUICKSTART
from test_population_step import TinyNet

ROWS = {"ea_adam_best": "EA-Adam best member", "ea_adam_uniform": "EA-Adam uniform average",
        "ea_adam_weighted": "EA-Adam val-weighted average",
        "ea_adam_fusion_baked": "EA-Adam fusion (baked)"}


class TinyClassifier(TinyNet):
  feature_names = ("stage3",)     # what the config's distill_feature is checked against


def _tiny_config():
  config = load_config_file(f"{QUICKSTART}:tiny,population")
  config.degradations = "awgn"                # objectives: clean, awgn
  config.data.max_per_split = 64
  config.batch_size = 8
  config.eval_batch_size = 32
  config.eval.level_stride = 50
  config.ea_adam.update(dict(epochs=1, size=2, neighbours=2, fitness_examples=0))
  config.ea_adam_fusion.update(dict(epochs=1, calibration_batches=1))
  return config


@pytest.fixture
def tiny_model(monkeypatch):
  """The run's dense model (built from the config by the study and by load_model): TinyNet."""
  monkeypatch.setattr(ClassificationTask, "build_model",
                      lambda self, config, spec: TinyClassifier(classes=spec.num_classes))


@pytest.fixture
def merged_run(tmp_path, tiny_model):
  """A run folder whose merging stages and rows were built on initialised members (module
  docstring): ``(workdir, {row label: results}, config, stacked members, (ctx, graph))``."""
  config = _tiny_config()
  ctx = make_context(config, str(tmp_path / "seed_0"), seed=0)
  (tmp_path / "config.json").write_text(config.to_json_best_effort())
  data = ctx.dataset
  (tmp_path / "run.json").write_text(json.dumps(
      {"dataset": data.name, "num_classes": data.num_classes,
       "image_shape": list(data.image_shape), "class_names": list(data.class_names)}))
  images = jnp.zeros((1, *data.image_shape))
  # Two members that always answer one class each: member 1 the validation split's most
  # frequent class (so it is the best member, by construction), member 0 a less frequent
  # one whose test accuracy differs most from member 1's (so the rows' accuracies differ).
  val, test = (np.bincount(np.asarray(split.labels), minlength=data.num_classes)
               for split in (data.validation, data.test))
  best = int(np.argmax(val))
  other = max((c for c in range(data.num_classes) if val[c] < val[best]),
              key=lambda c: abs(test[c] - test[best]))
  assert test[other] != test[best]
  base = ctx.model.init(jax.random.key(0), images)
  members = [jax.tree.map(lambda x: x, base) for _ in range(2)]
  for member, label in zip(members, (other, best)):
    member["params"]["Dense_0"]["bias"] = 10.0 * jax.nn.one_hot(label, data.num_classes)
  predictor = jax.jit(MixingPredictor(2, config.ea_adam_fusion.width).init)(
      jax.random.key(7), images)
  fusion = methods_lib.get("ea_adam_fusion")
  graph = {"clean": Stage("clean", (), lambda r: members[0]), **fusion.stages(ctx)}
  graph["ea_adam"] = Stage("ea_adam", ("clean",), lambda r: stack_members(members))
  graph["ea_adam_fusion"] = Stage("ea_adam_fusion", ("ea_adam",), lambda r: predictor)
  rows = _rows(Runner(ctx, graph))
  return tmp_path, rows, config, stack_members(members), (ctx, graph)


def _rows(runner) -> dict:
  return dict(methods_lib.get("ea_adam").rows(runner).rows
              + methods_lib.get("ea_adam_fusion").rows(runner).rows)


@pytest.fixture
def studied_run(tmp_path, tiny_model):
  """The tiny study run by ``fdjax.pipeline.run``: ``(workdir, {row label: results}, config,
  stacked members)``."""
  config = _tiny_config()
  records = pipeline.run(config, str(tmp_path))
  stacked = load_variables(str(tmp_path / "seed_0" / "ea_adam" / "variables"))
  return tmp_path, {label: results for label, _, results in records}, config, stacked


def _loads_and_reproduces(workdir, reported, config, stacked):
  test = data_lib.load(config.data.source, max_per_split=config.data.max_per_split).test
  for name, label in ROWS.items():
    loaded = fdjax.load_model(str(workdir), name)
    logits = np.asarray(loaded.predict(test.images))
    accuracy = float(np.mean(logits.argmax(-1) == test.labels))
    assert abs(accuracy - reported[label]["clean"]) < 1e-6, (name, accuracy, reported[label])
    labels = load_predictor(str(workdir), name)(test.images)
    np.testing.assert_array_equal(labels, logits.argmax(-1))
  # each loaded model is its closed form over the members (BatchNorm statistics included):
  # the best member by its mean validation metric, the mean, the metric-weighted mean, the
  # mixture by the baked mixing weights
  seed_dir = workdir / "seed_0"
  report = json.loads((seed_dir / "ea_adam" / "merged" / "merged.json").read_text())
  mean_metric = np.array([np.mean(list(m["values"].values())) for m in report["members"]])
  alpha = np.array(json.loads((seed_dir / "ea_adam_fusion" / "baked" / "alpha.json")
                              .read_text())["alpha"])
  np.testing.assert_allclose(report["merge_weights"], mean_metric)   # 'degradations' family
  assert report["best_member"] == int(np.argmax(mean_metric))
  assert abs(alpha.sum() - 1) < 1e-5 and np.all(alpha >= 0)
  weights = {"ea_adam_best": np.eye(len(mean_metric))[report["best_member"]],
             "ea_adam_uniform": np.full(len(mean_metric), 1 / len(mean_metric)),
             "ea_adam_weighted": mean_metric / mean_metric.sum(), "ea_adam_fusion_baked": alpha}
  flat = dict(jax.tree_util.tree_leaves_with_path(stacked))
  for name, w in weights.items():
    for path, leaf in jax.tree_util.tree_leaves_with_path(
        fdjax.load_model(str(workdir), name).variables):
      np.testing.assert_allclose(leaf, np.tensordot(w, np.asarray(flat[path]), axes=1),
                                 rtol=1e-5, atol=1e-6, err_msg=f"{name} {path}")
  # the rows of the table load as copied from it
  for name, row in ROWS.items():
    assert fdjax.load_model(str(workdir), row).path == fdjax.load_model(str(workdir), name).path
  # not one static model: refused, naming what to load instead
  for name in ("ea_adam_fusion", "EA-Adam fusion (dynamic)"):
    with pytest.raises(ValueError, match="load its static bake ea_adam_fusion_baked"):
      fdjax.load_model(str(workdir), name)
  with pytest.raises(ValueError, match="ea_adam_best, ea_adam_uniform, ea_adam_weighted"):
    load_predictor(str(workdir), "ea_adam")


def test_static_rows_load_and_reproduce_the_reported_accuracy(merged_run, monkeypatch):
  workdir, reported, config, stacked, (ctx, graph) = merged_run
  _loads_and_reproduces(workdir, reported, config, stacked)
  report = json.loads((workdir / "seed_0" / "ea_adam" / "merged" / "merged.json").read_text())
  assert report["best_member"] == 1                    # the frequent-class member
  test_labels = np.asarray(ctx.dataset.test.labels)
  best_class = np.argmax(np.bincount(np.asarray(ctx.dataset.validation.labels), minlength=10))
  assert reported["EA-Adam best member"]["clean"] == pytest.approx(
      np.mean(test_labels == best_class))
  # a second run reuses the saved merged models: nothing is merged or calibrated again
  def fail(*args, **kwargs):
    raise AssertionError("merged again")
  monkeypatch.setattr(ea_adam, "_merge", fail)
  monkeypatch.setattr(ea_adam, "average_mixing", fail)
  assert _rows(Runner(ctx, graph)) == reported


@pytest.mark.long
def test_a_whole_tiny_study_loads_its_static_rows(studied_run):
  _loads_and_reproduces(*studied_run)


def test_the_dynamic_fusion_row_costs_its_members_and_mixing_network(merged_run):
  """The dynamic network holds the P members and the mixing network and runs every member
  layer P times per image: not one dense model's cost (the baked row's)."""
  _, _, config, stacked, (ctx, graph) = merged_run
  ctx.config.eval.cost_columns = True
  out = methods_lib.get("ea_adam_fusion").rows(Runner(ctx, graph))
  columns = out.extra[ea_adam.DYNAMIC_ROW]
  count = lambda tree: sum(np.size(leaf) for leaf in jax.tree.leaves(tree))   # noqa: E731
  predictor = MixingPredictor(2, config.ea_adam_fusion.width).init(
      jax.random.key(7), jnp.zeros((1, *ctx.dataset.image_shape)))
  assert columns["params"] == count(stacked["params"]) + count(predictor["params"])
  assert columns["params"] == 2 * count(ctx.template_variables()["params"]) + count(
      predictor["params"])
  assert columns["FLOPs/img (rel.)"] >= 2.0   # two members, each layer run for both
  assert "params" not in out.extra[ea_adam.BAKED_ROW]   # one dense model: the default
