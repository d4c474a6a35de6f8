"""Restoration's base stage trains on every task from random weights, so with equal
``scratch`` and ``clean`` blocks the All-in-one (scratch) row reports the base model
(a copy under ``scratch/``) instead of training the same recipe twice; with different
blocks, or for classification (whose base sees clean images only), Scratch trains."""

import pathlib

import jax
import numpy as np

from fdjax import methods as methods_lib
from fdjax import pipeline
from fdjax.config_fields import load_config_file
from fdjax.data import restoration_sets
from fdjax.data.paired import PairedImages
from fdjax.study import make_context
from fdjax.study.runner import Runner, Stage
from fdjax.train.variables_io import load_variables
from random_weights import random_variables

PHOTOS = restoration_sets.photos
CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def small_photos():
  train, test = PHOTOS()
  return (PairedImages("photos", train.names, (train.targets[0][:64, :64],)),
          PairedImages("photos", test.names, (test.targets[0][:32, :32],)))


def restoration_context(tmp_path, monkeypatch, **epochs):
  monkeypatch.setattr(restoration_sets, "photos", small_photos)
  config = load_config_file(f"{CONFIGS / 'restoration_quickstart.py'}:tiny")
  config.data.tile = 32
  config.data.validation_fraction = 0.25
  config.batch_size = 1
  for block, value in epochs.items():
    config[block].epochs = value
  return make_context(config, str(tmp_path))


def plan(ctx, name="scratch"):
  return pipeline.planned_stages(ctx, [methods_lib.get(name)])


def test_equal_blocks_report_the_base_model(tmp_path, monkeypatch):
  ctx = restoration_context(tmp_path, monkeypatch)
  assert ctx.config.scratch.to_dict() == ctx.config.clean.to_dict()
  assert plan(ctx) == [("clean", plan(ctx, "vanilla")[0][1]), ("scratch", 0)]
  base = random_variables(ctx.model, 0, (32, 32, 3))
  graph = pipeline.stage_graph(ctx, [methods_lib.get("scratch")])
  graph["clean"] = Stage("clean", (), lambda runner: base)   # stands in for the training
  runner = Runner(ctx, graph)
  scored = []
  runner.evaluate = lambda name, variables: scored.append(name) or {"name": name}
  output = methods_lib.get("scratch").rows(runner)   # scored once, as the base model
  assert scored == ["clean"] and output.rows == [("Scratch", {"name": "clean"})]
  scratch = runner.get("scratch")
  saved = load_variables(str(tmp_path / "scratch" / "variables"), ctx.template_variables())
  for a, b, c in zip(jax.tree.leaves(base), jax.tree.leaves(scratch), jax.tree.leaves(saved)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
  assert not (tmp_path / "scratch" / "metrics.jsonl").exists()     # nothing trained


def test_different_blocks_train_scratch(tmp_path, monkeypatch):
  ctx = restoration_context(tmp_path, monkeypatch, scratch=2)
  ((name, work),) = plan(ctx)
  assert name == "scratch" and work > 0
  ctx.config.scratch.epochs = 1
  ctx.config.scratch.optimizer.lr *= 2
  assert [name for name, _ in plan(ctx)] == ["scratch"]


def test_classification_scratch_always_trains(tmp_path):
  config = load_config_file(f"{CONFIGS / 'quickstart.py'}:tiny")
  config.scratch = config.clean.copy_and_resolve_references()
  ctx = make_context(config, str(tmp_path))
  ((name, work),) = plan(ctx)
  assert name == "scratch" and work > 0
