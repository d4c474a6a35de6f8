"""The ea_adam method end to end on a tiny digits run (a one-convolution network instead
of the ResNet, and a random model as the clean stage, to stay fast): the stage trains and
evolves the population inside the engine's loop, member 0 stays the clean model, and
the rows and Pareto reports come out."""

import json
import pathlib

import jax
import numpy as np
import pytest

from fdjax import methods as methods_lib
from fdjax.config_fields import load_config_file
from fdjax.study import make_context
from fdjax.study.runner import Runner, Stage
from fdjax.train import init_variables

from test_population_step import TinyNet

QUICKSTART = pathlib.Path(__file__).resolve().parents[1] / "configs" / "quickstart.py"


@pytest.mark.long
def test_ea_adam_trains_evolves_and_reports(tmp_path):
  config = load_config_file(f"{QUICKSTART}:tiny")
  config.degradations = "awgn"                # objectives: clean, awgn
  config.data.max_per_split = 64
  config.batch_size = 8                       # per objective: 16 images per step
  config.eval_batch_size = 32
  config.eval.level_stride = 50
  config.methods = "ea_adam"
  config.ea_adam.update(dict(epochs=1, size=3, fitness_examples=16, neighbours=2))
  config.ea_adam.optimizer.lr = 1e-3
  ctx = make_context(config, str(tmp_path))
  ctx.model = TinyNet(classes=ctx.dataset.num_classes)
  clean = init_variables(ctx.model, jax.random.key(0), ctx.dataset.image_shape)
  method = methods_lib.get("ea_adam")
  graph = {"clean": Stage("clean", (), lambda r: clean), **method.stages(ctx)}
  out = method.rows(Runner(ctx, graph))

  assert [label for label, _ in out.rows] == [
      "EA-Adam best member", "EA-Adam uniform average", "EA-Adam val-weighted average"]
  assert all(0 <= r["avg"] <= 1 for _, r in out.rows)
  stacked = Runner(ctx, graph).get("ea_adam")
  for got, want in zip(jax.tree.leaves(jax.tree.map(lambda x: x[0], stacked)),
                       jax.tree.leaves(clean)):
    np.testing.assert_array_equal(got, want)          # member 0 frozen: still the clean model
  assert any(not np.array_equal(leaf[i], ref) for i in (1, 2)        # the others trained
             for leaf, ref in zip(jax.tree.leaves(stacked), jax.tree.leaves(clean)))
  stage_dir = pathlib.Path(ctx.stage_dir("ea_adam"))
  records = [json.loads(l) for l in open(stage_dir / "metrics.jsonl")]
  evolved = [r for r in records if "hypervolume" in r]
  assert [r["epoch"] for r in evolved] == [1]
  assert np.shape(evolved[-1]["member_metric"]) == (3, 2)
  report = json.loads((stage_dir / "merged" / "merged.json").read_text())
  assert report["objectives"] == ["clean", "awgn"] and len(report["members"]) == 3
  assert set(report["merged"]) == {"uniform", "weighted"} and report["hypervolume"] >= 0
  assert (stage_dir / "merged" / "pareto.png").stat().st_size > 0
