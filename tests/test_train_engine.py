"""Engine seams: an epoch-end hook that replaces the state, vector (population) losses, the
state's sharding as an argument of the step, and the study line in fit's progress."""

import json
import logging as pylogging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec as P

from fdjax.data import ImageSet
from fdjax.train import (Checkpointer, LoopConfig, NonFiniteLossError, create_train_state, fit,
                         make_mesh, make_train_step, replicated)
from fdjax.train.progress import StudyProgress

LR = 0.1   # SGD on sum(w^2): every step multiplies w by (1 - 2 LR) = 0.8
SPLIT = ImageSet(np.zeros((4, 4, 4, 3), np.uint8), np.zeros(4, np.int32))   # 4 steps / epoch


def _state(mesh, w=(1.0, 2.0, 3.0)):
  variables = {"params": {"w": jnp.asarray(w, jnp.float32)}, "batch_stats": {}}
  return create_train_state(variables, optax.sgd(LR), jax.random.PRNGKey(0), mesh)


def _scalar_loss(params, batch_stats, batch, key):
  return jnp.sum(params["w"] ** 2), (batch_stats, {})


def _vector_loss(params, batch_stats, batch, key):
  """A population of 3 one-parameter models: loss[i] = w[i]^2, shape [3]."""
  return params["w"] ** 2, (batch_stats, {"w": params["w"]})


def _fit(tmp_path, loss_fn=_scalar_loss, **kwargs):
  mesh = make_mesh()
  loop_kwargs = dict(epochs=3, batch_size=1, log_every_steps=2, checkpoint_every_steps=100)
  loop_kwargs.update(kwargs.pop("loop", {}))
  return fit(_state(mesh), make_train_step(loss_fn, optax.sgd(LR), mesh), SPLIT,
             loop=LoopConfig(**loop_kwargs), mesh=mesh, workdir=str(tmp_path), name="toy",
             **kwargs)


def _swap_after_first_epoch(state, epoch):
  """The evolutionary-step seam: after epoch 0 every member's w becomes 5."""
  if epoch == 0:
    return state.replace(params={"w": jnp.full((3,), 5.0)}), {"swapped": 1}
  return {"swapped": 0}


def test_hook_returning_a_state_replaces_checkpoints_and_continues_from_it(tmp_path):
  final = _fit(tmp_path, on_epoch_end=_swap_after_first_epoch)
  np.testing.assert_allclose(final.params["w"], np.full(3, 5.0 * 0.8 ** 8), rtol=1e-5)
  checkpointer = Checkpointer(tmp_path / "checkpoints")
  assert 4 in checkpointer.all_steps()                     # saved right after the swap
  swapped, meta = checkpointer.restore(_state(make_mesh()), step=4)
  np.testing.assert_array_equal(swapped.params["w"], np.full(3, 5.0))
  assert meta["step"] == 4
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["swapped"] for r in records if "swapped" in r] == [1, 0, 0]


def test_crash_after_the_swap_resumes_from_the_replacement(tmp_path):
  # A periodic checkpoint on an epoch's last step is written after the hook, so the
  # checkpoint at step 4 holds the swapped state and resuming never skips the swap.
  def swap_then_crash(state, epoch):
    if epoch == 1:
      raise RuntimeError("crash at the end of epoch 1")
    return _swap_after_first_epoch(state, epoch)

  with pytest.raises(RuntimeError, match="crash"):
    _fit(tmp_path, on_epoch_end=swap_then_crash, loop=dict(checkpoint_every_steps=4))
  checkpointer = Checkpointer(tmp_path / "checkpoints")
  assert checkpointer.latest_step() == 4
  restored, _ = checkpointer.restore(_state(make_mesh()))
  np.testing.assert_array_equal(restored.params["w"], np.full(3, 5.0))
  resumed = _fit(tmp_path, on_epoch_end=_swap_after_first_epoch,
                 loop=dict(checkpoint_every_steps=4))
  np.testing.assert_allclose(resumed.params["w"], np.full(3, 5.0 * 0.8 ** 8), rtol=1e-5)


def test_vector_loss_trains_each_member_and_is_logged_as_list_and_mean(tmp_path, caplog):
  study = StudyProgress([("toy", 12)])
  study.start("toy")
  # On absl's logger: an earlier test in the same process may have lowered absl's verbosity.
  with caplog.at_level(pylogging.INFO, logger="absl"):
    final = _fit(tmp_path, loss_fn=_vector_loss, study=study)
  # d sum(w^2) / dw = 2w: each member decays on its own.
  np.testing.assert_allclose(final.params["w"], np.array([1.0, 2.0, 3.0]) * 0.8 ** 12, rtol=1e-5)
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  first = records[0]                                       # after 2 steps
  np.testing.assert_allclose(first["loss"], (np.array([1.0, 2.0, 3.0]) * 0.8 ** 1) ** 2, rtol=1e-5)
  assert len(first["w"]) == 3 and first["finite"] == 1.0
  lines = [r.getMessage() for r in caplog.records if "[toy] step" in r.getMessage()]
  mean = np.mean((np.array([1.0, 2.0, 3.0]) * 0.8) ** 2)
  assert f"loss {mean:.4f} (mean of 3)" in lines[0]
  assert "study: stage 1/1 toy" in lines[-1] and "ETA" in lines[-1]


def test_non_finite_element_of_a_vector_loss_stops_training(tmp_path):
  def one_member_diverges(params, batch_stats, batch, key):
    loss = params["w"] ** 2 + jnp.asarray([0.0, 0.0, jnp.nan])   # gradients stay finite
    return loss, (batch_stats, {})

  mesh = make_mesh()
  _, metrics = make_train_step(one_member_diverges, optax.sgd(LR), mesh)(_state(mesh), {})
  assert metrics["finite"].shape == () and float(metrics["finite"]) == 0.0
  with pytest.raises(NonFiniteLossError, match="non-finite"):
    _fit(tmp_path, loss_fn=one_member_diverges)


def test_replicated_state_on_a_mesh_with_another_axis_is_refused():
  mesh = AbstractMesh((1, 4), ("data", "expert"))
  with pytest.raises(ValueError, match=r"expert_sharding\(mesh, state\)"):
    make_train_step(_scalar_loss, optax.sgd(LR), mesh)


def test_explicit_state_sharding_is_used_for_the_state():
  mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("data", "population"))
  state = _state(mesh)   # replicated; then the population axis laid on 'population'
  member_split = NamedSharding(mesh, P("population"))
  sharding = state.replace(step=replicated(mesh), rng=replicated(mesh),
                           params={"w": member_split}, batch_stats={},
                           opt_state=jax.tree.map(lambda _: replicated(mesh), state.opt_state))
  state = jax.device_put(state, sharding)
  step = make_train_step(_vector_loss, optax.sgd(LR), mesh, state_sharding=sharding)
  new_state, metrics = step(state, jax.device_put({"image": jnp.zeros((1, 4, 4, 3))}))
  assert new_state.params["w"].sharding.spec == P("population")
  np.testing.assert_allclose(new_state.params["w"], [0.8, 1.6, 2.4], rtol=1e-6)
  assert metrics["loss"].shape == (3,)
