"""The parameters' moving average (fdjax.train.ema): its recursion against numpy, exact
resume, and a stage that evaluates, selects and saves the average."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdjax.config_fields import load_config_file
from fdjax.data import ImageSet
from fdjax.study import make_context
from fdjax.study.training import Recipe, train_stage
from fdjax.train import (Checkpointer, LoopConfig, create_train_state, fit, init_variables,
                         make_mesh, make_optimizer, make_train_step)
from fdjax.train.ema import (ema_decay_at, evaluated_variables, find_parameter_ema,
                             parameter_ema, with_parameter_ema)
from fdjax.train.objectives import supervised_loss
from fdjax.train.variables_io import load_variables

QUICKSTART = pathlib.Path(__file__).resolve().parents[1] / "configs" / "quickstart.py"


def _numpy_ema(decay, start, gradients, lr):
  """SGD's parameters and their average, in float64, from the module docstring's
  recursion."""
  params, ema = start.astype(np.float64), start.astype(np.float64)
  for n, g in enumerate(gradients):
    params = params - lr * g
    d = min(decay, (1 + n) / (10 + n))
    ema = d * ema + (1 - d) * params
  return params, ema


@pytest.mark.parametrize("decay", [0.5, 0.9, 0.999])
def test_average_follows_the_recursion_and_leaves_the_updates_alone(decay):
  rng = np.random.default_rng(0)
  start, gradients = rng.normal(size=(5,)), rng.normal(size=(40, 5))
  tx = with_parameter_ema(optax.sgd(0.1), decay)
  params = {"w": jnp.asarray(start, jnp.float32)}
  state = tx.init(params)
  for g in gradients:
    updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    params = optax.apply_updates(params, updates)
  want_params, want_ema = _numpy_ema(decay, start, gradients, 0.1)
  np.testing.assert_allclose(np.asarray(params["w"]), want_params, rtol=1e-5, atol=1e-6)
  found = find_parameter_ema(state)
  assert int(found.count) == 40
  np.testing.assert_allclose(np.asarray(found.ema["w"]), want_ema, rtol=1e-5, atol=1e-6)
  assert not np.allclose(want_ema, want_params)


def test_decay_schedule_and_bad_values():
  # min(decay, (1 + n) / (10 + n)): 0.1 at the first update, the decay itself later.
  np.testing.assert_allclose(float(ema_decay_at(0.999, 0)), 0.1, rtol=1e-6)
  np.testing.assert_allclose(float(ema_decay_at(0.9, 1000)), 0.9, rtol=1e-6)
  tx = optax.sgd(0.1)
  assert with_parameter_ema(tx, 0.0) is tx
  assert find_parameter_ema(tx.init({"w": jnp.zeros(2)})) is None
  for bad in (1.0, -0.1):
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
      parameter_ema(bad)
  with pytest.raises(ValueError, match="needs the parameters"):
    parameter_ema(0.9).update({"w": jnp.zeros(2)}, parameter_ema(0.9).init({"w": jnp.zeros(2)}))


def _linear_loss(params, batch_stats, batch, key):
  x = jnp.mean(batch["image"].astype(jnp.float32), axis=(1, 2, 3)) / 255.0
  target = batch["label"].astype(jnp.float32)
  noise = 0.1 * jax.random.normal(key, x.shape)
  return jnp.mean((params["w"] * x + params["b"] + noise - target) ** 2), (batch_stats, {})


def _fit(workdir, max_steps=0, step=None):
  rng = np.random.default_rng(0)
  split = ImageSet(rng.integers(0, 256, (48, 4, 4, 3), dtype=np.uint8),
                   rng.integers(0, 3, 48).astype(np.int32))
  mesh = make_mesh()
  tx = with_parameter_ema(optax.adam(0.05), 0.8)
  state = create_train_state({"params": {"w": jnp.zeros(()), "b": jnp.zeros(())},
                              "batch_stats": {}}, tx, jax.random.PRNGKey(1), mesh)
  step = step or make_train_step(_linear_loss, tx, mesh)
  loop = LoopConfig(epochs=3, batch_size=8, seed=2, log_every_steps=100,
                    checkpoint_every_steps=4, max_steps=max_steps)
  return fit(state, step, split, loop=loop, mesh=mesh, workdir=str(workdir), name="ema"), step


def test_an_interrupted_run_resumes_to_the_same_average(tmp_path):
  full, step = _fit(tmp_path / "full")
  partial, _ = _fit(tmp_path / "resumed", max_steps=7, step=step)   # "crash" at 7 of 18
  assert int(partial.step) == 7
  resumed, _ = _fit(tmp_path / "resumed", step=step)
  assert int(resumed.step) == int(full.step) == 18
  a, b = find_parameter_ema(full.opt_state), find_parameter_ema(resumed.opt_state)
  assert int(a.count) == int(b.count) == 18
  for x, y in zip(jax.tree.leaves(a.ema), jax.tree.leaves(b.ema)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # What a stage evaluates is the average, not the last parameters.
  evaluated = evaluated_variables(full)
  assert float(evaluated["params"]["w"]) == float(a.ema["w"]) != float(full.params["w"])


@pytest.fixture(scope="module")
def tiny_context(tmp_path_factory):
  """The quickstart's tiny context, its clean stage averaging its parameters."""
  config = load_config_file(f"{QUICKSTART}:tiny")
  config.checkpoint.every_steps = 1000     # one checkpoint: the stage's last step
  config.clean.optimizer.ema_decay = 0.9
  return make_context(config, str(tmp_path_factory.mktemp("ema")))


@pytest.mark.parametrize("selection", ["last", "val"])
def test_a_stage_saves_and_selects_on_the_average(tiny_context, tmp_path, selection):
  ctx = tiny_context
  ctx.config.selection, ctx.workdir = selection, str(tmp_path)
  block = ctx.config.clean
  # One compiled step for both selections (Recipe.shared_step): the test is about what
  # the stage saves, not the step.
  recipe = Recipe(supervised_loss(ctx.model, ctx.task), shared_step="ema-test")
  variables = train_stage(ctx, "clean", block, recipe)
  stage = pathlib.Path(ctx.stage_dir("clean"))
  tx, _ = make_optimizer(block.optimizer, epochs=1, steps_per_epoch=1)   # the state's tree
  tx = with_parameter_ema(tx, 0.9)
  template = create_train_state(init_variables(ctx.model, jax.random.key(0),
                                               ctx.dataset.image_shape),
                                tx, jax.random.PRNGKey(0), ctx.mesh)
  checkpointer = Checkpointer(stage / "checkpoints")
  last, _ = checkpointer.restore(template)
  checkpointer.close()
  average = find_parameter_ema(last.opt_state)
  assert int(average.count) == int(last.step) > 1
  leaves = lambda tree: [np.asarray(x) for x in jax.tree.leaves(tree)]
  for x, y in zip(leaves(variables["params"]), leaves(average.ema)):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in
             zip(leaves(variables["params"]), leaves(last.params)))
  if selection == "val":    # one epoch: the best epoch is the last, scored on the average
    assert json.loads((stage / "best.json").read_text())["epoch"] == 1
    best = load_variables(str(stage / "best"), ctx.template_variables())
    for x, y in zip(leaves(best["params"]), leaves(average.ema)):
      np.testing.assert_array_equal(x, y)
