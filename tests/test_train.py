"""Training engine: optimiser semantics, the generic step, checkpoints, resume, NaN stop."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdjax.config import optimizer_config
from fdjax.data import ImageSet
from fdjax.models import cifar_resnet
from fdjax.train import (Checkpointer, CorruptCheckpointError, IncompatibleCheckpointError,
                         LoopConfig, NonFiniteLossError, create_train_state, fit, init_variables,
                         make_mesh, make_optimizer, make_schedule, make_train_step)
from fdjax.tasks import NO_AUGMENT, Augment, ClassificationTask
from fdjax.train.objectives import supervised_loss


def test_sgd_momentum_weight_decay_matches_pytorch_formula():
  # torch.optim.SGD(lr, momentum=m, weight_decay=wd): d = g + wd*p; buf = m*buf + d; p -= lr*buf.
  lr, m, wd = 0.1, 0.9, 1e-2
  tx, _ = make_optimizer(optimizer_config("sgd", lr, momentum=m, weight_decay=wd,
                                          schedule="constant"), epochs=1, steps_per_epoch=1)
  p = np.array([1.0, -2.0]); grads = [np.array([0.5, 0.25]), np.array([-1.0, 2.0])]
  params = jnp.asarray(p, jnp.float32); opt_state = tx.init(params)
  buf = np.zeros(2)
  for g in grads:
    d = g + wd * p; buf = m * buf + d; p = p - lr * buf
    updates, opt_state = tx.update(jnp.asarray(g, jnp.float32), opt_state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(params, p, rtol=1e-6)


def test_radam_first_step_is_bias_corrected_momentum():
  # While rho_t <= 5 (the first steps) RAdam takes an SGD-with-momentum step: p -= lr * m_hat.
  lr, wd = 1e-3, 1e-4
  tx, _ = make_optimizer(optimizer_config("radam", lr, weight_decay=wd, schedule="constant"),
                         epochs=1, steps_per_epoch=1)
  p = np.array([0.3, -0.7], np.float32); g = np.array([2.0, -1.0], np.float32)
  updates, _ = tx.update(jnp.asarray(g), tx.init(jnp.asarray(p)), jnp.asarray(p))
  np.testing.assert_allclose(np.asarray(updates), -lr * (g + wd * p), rtol=1e-5)


@pytest.mark.parametrize("beta2", [0.9, 0.999, None])
def test_adam_beta2_matches_pytorch_formula(beta2):
  # torch.optim.Adam(lr, betas=(0.9, beta2), eps=1e-8): m = b1*m + (1-b1)*g,
  # v = b2*v + (1-b2)*g^2, p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
  # beta2 None: a config made before the field, which keeps PyTorch's 0.999.
  lr, b1, eps = 1e-2, 0.9, 1e-8
  cfg = optimizer_config("adam", lr, weight_decay=0.0, schedule="constant",
                         **({} if beta2 is None else {"beta2": beta2}))
  if beta2 is None:
    del cfg["beta2"]
  b2 = 0.999 if beta2 is None else beta2
  tx, _ = make_optimizer(cfg, epochs=1, steps_per_epoch=1)
  p = np.array([0.5, -1.5]); m = np.zeros(2); v = np.zeros(2)
  # a gradient that shrinks 100x, as early training's does: beta2 sets how long the
  # first, large gradients hold the step down
  grads = [np.array([4.0, -2.0]), np.array([0.04, -0.02]), np.array([0.04, 0.02]),
           np.array([-0.04, 0.02])]
  params = jnp.asarray(p, jnp.float32); opt_state = tx.init(params)
  for t, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g * g
    p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    updates, opt_state = tx.update(jnp.asarray(g, jnp.float32), opt_state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(params, p, rtol=1e-5)


def test_multistep_schedule_decays_at_epoch_milestones():
  schedule = make_schedule("multistep", 0.1, epochs=10, steps_per_epoch=5, milestones=(3, 6),
                           decay=0.2)
  assert np.isclose(schedule(14), 0.1) and np.isclose(schedule(15), 0.02)
  assert np.isclose(schedule(29), 0.02) and np.isclose(schedule(30), 0.004)
  with pytest.raises(ValueError, match="milestones"):
    make_schedule("multistep", 0.1, epochs=10, steps_per_epoch=5, milestones=(12,))
  with pytest.raises(ValueError, match="unknown schedule"):
    make_schedule("warmup", 0.1, epochs=10, steps_per_epoch=5)


def test_cosine_schedule_matches_closed_form():
  schedule = make_schedule("cosine", 1e-3, epochs=4, steps_per_epoch=25)
  for t in (0, 30, 99):
    assert np.isclose(schedule(t), 1e-3 * 0.5 * (1 + np.cos(np.pi * t / 100)), rtol=1e-5)


def _tiny_setup(tmp_path, seed=0, n=64):
  rng = np.random.default_rng(seed)
  split = ImageSet(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                   rng.integers(0, 4, n).astype(np.int32))
  model = cifar_resnet(8, 4)
  task = ClassificationTask("unit", Augment(flip=True, crop=True, pad=4, cutout=True,
                                            cutout_size=8))
  loss_fn = supervised_loss(model, task)
  tx, schedule = make_optimizer(optimizer_config("sgd", 0.05, milestones=(2,)), epochs=3,
                                steps_per_epoch=n // 16)
  mesh = make_mesh()
  variables = init_variables(model, jax.random.key(seed), (32, 32, 3))
  return split, loss_fn, tx, schedule, mesh, variables


def _run(tmp_path, workdir, max_steps=0, split_seed=0, step=None):
  """``step``: a train step built by an earlier call (same loss and optimizer), so that
  the runs of one test compile once."""
  split, loss_fn, tx, schedule, mesh, variables = _tiny_setup(tmp_path, split_seed)
  state = create_train_state(variables, tx, jax.random.PRNGKey(7), mesh)
  loop = LoopConfig(epochs=3, batch_size=16, seed=3, log_every_steps=2,
                    checkpoint_every_steps=5, max_steps=max_steps)
  step = step or make_train_step(loss_fn, tx, mesh)
  return fit(state, step, split, loop=loop, mesh=mesh, workdir=str(workdir),
             schedule=schedule, name="tiny"), step


def test_interrupted_run_resumes_to_identical_parameters(tmp_path):
  full, step = _run(tmp_path, tmp_path / "full")
  partial, _ = _run(tmp_path, tmp_path / "resumed", max_steps=7, step=step)  # "crash" at 7/12
  assert int(partial.step) == 7
  resumed, _ = _run(tmp_path, tmp_path / "resumed", step=step)
  assert int(resumed.step) == int(full.step) == 12
  for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(jax.tree.leaves(full.opt_state), jax.tree.leaves(resumed.opt_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  records = [json.loads(l) for l in open(tmp_path / "full" / "metrics.jsonl")]
  assert {"step", "loss", "lr", "images_per_s", "eta_s"} <= set(records[-1])
  assert records[-1]["step"] == 12


def test_training_reduces_loss_on_a_learnable_problem(tmp_path):
  # Labels are a function of the image's brightness: a ResNet-8 learns it in a few steps.
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 128).astype(np.int32)
  images = np.where(labels[:, None, None, None] == 1, 200, 40).astype(np.uint8)
  images = np.broadcast_to(images, (128, 32, 32, 3)).copy()
  _, _, _, _, mesh, _ = _tiny_setup(tmp_path)
  model = cifar_resnet(8, 2)
  loss_fn = supervised_loss(model, ClassificationTask("unit", NO_AUGMENT))
  tx, _ = make_optimizer(optimizer_config("sgd", 0.05, schedule="constant"), epochs=1,
                         steps_per_epoch=1)
  state = create_train_state(init_variables(model, jax.random.key(0), (32, 32, 3)), tx,
                             jax.random.PRNGKey(0), mesh)
  step = make_train_step(loss_fn, tx, mesh)
  batch = {"image": jnp.asarray(images[:32]), "label": jnp.asarray(labels[:32])}
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < 0.5 * losses[0]


def _quadratic_state(lr, mesh):
  tx = optax.sgd(lr)
  variables = {"params": {"w": jnp.ones((3,))}, "batch_stats": {}}
  return create_train_state(variables, tx, jax.random.PRNGKey(0), mesh), tx


def _quadratic_loss(params, batch_stats, batch, key):
  return jnp.sum(params["w"] ** 2), (batch_stats, {})


def test_each_step_draws_from_its_own_key(tmp_path):
  # The key a loss gets is the state's key folded with the step counter: a step that
  # reused one key would draw the same degradation, crop, flip and noise every step.
  mesh = make_mesh()
  state, tx = _quadratic_state(0.1, mesh)

  def loss_fn(params, batch_stats, batch, key):
    return jnp.sum(params["w"] ** 2), (batch_stats, {"draw": jax.random.uniform(key)})

  step = make_train_step(loss_fn, tx, mesh)
  draws = []
  for _ in range(3):
    state, metrics = step(state, {"x": jnp.zeros((8,))})
    draws.append(float(metrics["draw"]))
  assert len(set(draws)) == 3, draws
  expected = [float(jax.random.uniform(jax.random.fold_in(jax.random.PRNGKey(0), i)))
              for i in range(3)]
  np.testing.assert_allclose(draws, expected, rtol=1e-6)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  # lr 10 on w^2 multiplies w by -19 per step: overflow to inf/NaN after ~30 steps.
  mesh = make_mesh()
  state, tx = _quadratic_state(10.0, mesh)
  split = ImageSet(np.zeros((8, 4, 4, 3), np.uint8), np.zeros(8, np.int32))
  loop = LoopConfig(epochs=100, batch_size=1, log_every_steps=5, checkpoint_every_steps=5)
  # The first step whose loss or gradient norm is not finite, in float32 numpy.
  w, first_bad = np.ones(3, np.float32), None
  with np.errstate(over="ignore", invalid="ignore"):
    for n in range(1, 100):
      if not (np.isfinite(np.sum(w * w)) and np.isfinite(np.linalg.norm(2 * w))):
        first_bad = n
        break
      w = w - np.float32(10.0) * 2 * w
  assert first_bad % 5   # between two checks: the message names it, not the check's step
  with pytest.raises(NonFiniteLossError, match="last good checkpoint is step") as info:
    fit(state, make_train_step(_quadratic_loss, tx, mesh), split, loop=loop, mesh=mesh,
        workdir=str(tmp_path), name="diverge")
  assert f"at step {first_bad} (of 800; found at step {first_bad // 5 * 5 + 5})" in str(info.value)
  checkpointer = Checkpointer(tmp_path / "checkpoints")
  last = checkpointer.latest_step()
  assert last == (first_bad - 1) // 5 * 5
  restored, meta = checkpointer.restore(_quadratic_state(10.0, mesh)[0])
  assert np.all(np.isfinite(np.asarray(restored.params["w"])))
  assert meta["step"] == last


def test_the_logged_rate_is_the_one_the_steps_update_used(tmp_path):
  """SGD on w^2 scales w by (1 - 2 lr) per step: the logged rates must reproduce w."""
  mesh = make_mesh()
  schedule = lambda count: 0.1 * (count + 1)   # noqa: E731  0.1, 0.2, 0.3 for updates 1..3
  tx = optax.sgd(schedule)
  state = create_train_state({"params": {"w": jnp.ones((3,))}, "batch_stats": {}}, tx,
                             jax.random.PRNGKey(0), mesh)
  split = ImageSet(np.zeros((3, 4, 4, 3), np.uint8), np.zeros(3, np.int32))
  final = fit(state, make_train_step(_quadratic_loss, tx, mesh), split, mesh=mesh,
              loop=LoopConfig(epochs=1, batch_size=1, log_every_steps=1),
              workdir=str(tmp_path), schedule=schedule, name="rate")
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  rates = [r["lr"] for r in records]
  np.testing.assert_allclose(rates, [0.1, 0.2, 0.3])
  np.testing.assert_allclose(np.asarray(final.params["w"]),
                             np.full(3, np.prod([1 - 2 * r for r in rates])), rtol=1e-6)


def test_the_first_step_s_compilation_stays_out_of_the_stage_s_rate_and_eta(tmp_path,
                                                                           monkeypatch):
  """A first step that takes 0.5 s (compiling) and then fast ones: the first line's ETA
  read about 4 x 0.5 s / 4 for a stage a moment from its end."""
  import time

  mesh = make_mesh()
  tx = optax.sgd(0.1)
  state = create_train_state({"params": {"w": jnp.ones((3,))}, "batch_stats": {}}, tx,
                             jax.random.PRNGKey(0), mesh)
  split = ImageSet(np.zeros((8, 4, 4, 3), np.uint8), np.zeros(8, np.int32))
  step = make_train_step(_quadratic_loss, tx, mesh)
  calls = []

  def compiling_first(*args):
    calls.append(1)
    if len(calls) == 1:
      time.sleep(0.5)
    return step(*args)

  import fdjax.train.loop as loop_lib
  said = []
  monkeypatch.setattr(loop_lib.logging, "info", lambda fmt, *a: said.append(str(fmt) % a))
  loop = LoopConfig(epochs=1, batch_size=1, log_every_steps=4, max_steps=3)
  fit(state, compiling_first, split, mesh=mesh, workdir=str(tmp_path), name="eta", loop=loop)
  # Before the compiling step, a line says so (a cold compilation was 15 s without one).
  assert [line for line in said if line.startswith("[eta] training")] == [
      "[eta] training steps 1-3 of 8, 1 image each (the first step compiles)"]
  # Resumed at step 3: its first step (4) is logged itself, and its interval holds the
  # compiling step (a restart there gave thousands of images/s and an ETA of 0).
  calls.clear()
  fit(state, compiling_first, split, mesh=mesh, workdir=str(tmp_path), name="eta",
      loop=LoopConfig(epochs=1, batch_size=1, log_every_steps=4))
  assert "[eta] training steps 4-8 of 8, 1 image each (the first step compiles)" in said
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in lines] == [3, 4, 8]
  assert lines[1]["images_per_s"] < 2.5, lines[1]          # 1 image in about 0.5 s
  assert lines[2]["eta_s"] == 0.0

  # A fresh run: its first line (step 4) measures steps 2-4 only.
  state2 = create_train_state({"params": {"w": jnp.ones((3,))}, "batch_stats": {}}, tx,
                              jax.random.PRNGKey(0), mesh)
  calls.clear()
  fit(state2, compiling_first, split, mesh=mesh, workdir=str(tmp_path / "fresh"), name="eta",
      loop=LoopConfig(epochs=1, batch_size=1, log_every_steps=4))
  first = json.loads(open(tmp_path / "fresh" / "metrics.jsonl").readline())
  assert first["step"] == 4 and first["eta_s"] < 0.2, first


def test_the_frozen_teacher_goes_to_the_devices_once_not_at_every_step(tmp_path):
  mesh = make_mesh()
  tx = optax.sgd(0.1)
  state = create_train_state({"params": {"w": jnp.ones((3,))}, "batch_stats": {}}, tx,
                             jax.random.PRNGKey(0), mesh)
  teacher = {"t": np.array([1.0, 2.0, 3.0], np.float32)}   # host arrays, as stages load them

  def loss_fn(params, batch_stats, batch, key, frozen):
    return jnp.sum((params["w"] - frozen["t"]) ** 2), (batch_stats, {})

  split = ImageSet(np.zeros((4, 4, 4, 3), np.uint8), np.zeros(4, np.int32))
  step = make_train_step(loss_fn, tx, mesh)
  # Implicit host-to-device copies fail: the batches are placed explicitly, and so must
  # the teacher be, once (the step would otherwise upload it on every call).
  with jax.transfer_guard_host_to_device("disallow"):
    final = fit(state, step, split, mesh=mesh, frozen=teacher, workdir=str(tmp_path),
                loop=LoopConfig(epochs=1, batch_size=1), name="teacher")
  # w_{n+1} = w_n - 0.1 * 2 (w_n - t) = 0.8 w_n + 0.2 t, four steps
  expected = 0.8 ** 4 * 1.0 + (1 - 0.8 ** 4) * teacher["t"]
  np.testing.assert_allclose(np.asarray(final.params["w"]), expected, rtol=1e-6)


def test_nan_before_any_checkpoint_says_so(tmp_path):
  mesh = make_mesh()
  state, tx = _quadratic_state(1e30, mesh)  # inf after the first steps
  split = ImageSet(np.zeros((8, 4, 4, 3), np.uint8), np.zeros(8, np.int32))
  loop = LoopConfig(epochs=100, batch_size=1, log_every_steps=5, checkpoint_every_steps=1000)
  with pytest.raises(NonFiniteLossError, match="no checkpoint yet") as info:
    fit(state, make_train_step(_quadratic_loss, tx, mesh), split, loop=loop, mesh=mesh,
        workdir=str(tmp_path), name="diverge")
  assert "step None" not in str(info.value) and "learning rate" in info.value.hint


@pytest.mark.parametrize("lr, raises", [(0.1, None), (1e30, NonFiniteLossError)])
def test_fit_closes_the_checkpointer_it_makes_and_not_the_callers(tmp_path, monkeypatch, lr,
                                                                   raises):
  # orbax's CheckpointManager runs threads until closed; fit's own must end with fit,
  # whether it returns or raises; a checkpointer passed in stays open for its owner.
  from fdjax.train import loop as loop_lib
  closed = []

  class Recorded(Checkpointer):
    def close(self):
      closed.append(str(self.directory))
      super().close()

  monkeypatch.setattr(loop_lib, "Checkpointer", Recorded)
  mesh = make_mesh()
  split = ImageSet(np.zeros((8, 4, 4, 3), np.uint8), np.zeros(8, np.int32))
  loop = LoopConfig(epochs=2, batch_size=1, log_every_steps=4, checkpoint_every_steps=4)

  def run(**kwargs):
    state, tx = _quadratic_state(lr, mesh)
    if raises is None:
      return fit(state, make_train_step(_quadratic_loss, tx, mesh), split, loop=loop,
                 mesh=mesh, workdir=str(tmp_path / "own"), name="own", **kwargs)
    with pytest.raises(raises):
      fit(state, make_train_step(_quadratic_loss, tx, mesh), split, loop=loop, mesh=mesh,
          workdir=str(tmp_path / "own"), name="own", **kwargs)

  run()
  assert closed == [str(tmp_path / "own" / "checkpoints")]
  mine = Recorded(tmp_path / "mine")
  run(checkpointer=mine)
  assert len(closed) == 1            # the caller's is not closed by fit
  if raises is None:
    assert mine.latest_step() == 16  # and still usable
  mine.close()


def test_incompatible_checkpoint_is_a_clear_error(tmp_path):
  mesh = make_mesh()
  state, _ = _quadratic_state(0.1, mesh)
  Checkpointer(tmp_path).save(state, {"note": "w of shape 3"})
  other = create_train_state({"params": {"w": jnp.ones((4,))}, "batch_stats": {}},
                             optax.sgd(0.1), jax.random.PRNGKey(0), mesh)
  with pytest.raises(IncompatibleCheckpointError, match=r"params/w saved \(3,\) vs expected \(4,\)"):
    Checkpointer(tmp_path).restore(other)


@pytest.mark.parametrize("damage", ["metadata", "data"])
def test_corrupt_checkpoint_is_a_clear_error_not_a_restart(tmp_path, damage):
  mesh = make_mesh()
  state, tx = _quadratic_state(0.1, mesh)
  Checkpointer(tmp_path / "checkpoints").save(state)
  state_dir = tmp_path / "checkpoints" / "0" / "state"
  if damage == "metadata":
    targets = [p for p in glob.glob(str(state_dir / "**" / "*"), recursive=True)
               if os.path.isfile(p) and "METADATA" in os.path.basename(p).upper()]
  else:
    targets = [p for p in glob.glob(str(state_dir / "**" / "d" / "*"), recursive=True)
               if os.path.isfile(p)]
  assert targets, sorted(glob.glob(str(state_dir / "**"), recursive=True))
  for path in targets:
    with open(path, "wb") as f:
      f.write(b"\x00garbage\xff" * 3)
  split = ImageSet(np.zeros((8, 4, 4, 3), np.uint8), np.zeros(8, np.int32))
  loop = LoopConfig(epochs=1, batch_size=1)
  with pytest.raises(CorruptCheckpointError, match=str(tmp_path / "checkpoints" / "0")):
    fit(state, make_train_step(_quadratic_loss, tx, mesh), split, loop=loop, mesh=mesh,
        workdir=str(tmp_path), name="corrupt")


def test_an_epoch_end_hook_never_sees_a_diverged_state(tmp_path):
  # The loss overflows within the first epoch of 8 steps, between log steps (every 100):
  # the hook (validation, which would save a NaN model as the best) must not run.
  mesh = make_mesh()
  state, tx = _quadratic_state(1e30, mesh)
  split = ImageSet(np.zeros((8, 4, 4, 3), np.uint8), np.zeros(8, np.int32))
  loop = LoopConfig(epochs=2, batch_size=1, log_every_steps=100, checkpoint_every_steps=1000)
  hooked = []
  with pytest.raises(NonFiniteLossError, match="non-finite"):
    fit(state, make_train_step(_quadratic_loss, tx, mesh), split, loop=loop, mesh=mesh,
        workdir=str(tmp_path), name="diverge",
        on_epoch_end=lambda s, epoch: hooked.append(epoch) or {})
  assert hooked == []


@pytest.mark.parametrize("every", [5, 4])
def test_a_resumed_run_logs_each_step_once(tmp_path, every):
  # A crash in epoch 2's hook (step 8) after a checkpoint at step 5: steps 6 and 8 were
  # logged, are run again and must be logged again once, as an uninterrupted run logs them.
  # With checkpoints every 4 steps one falls on the epoch's last step (8): it is saved
  # after the hook, so the resumed run scores epoch 2 (a checkpoint saved before the
  # hook resumed past it, and that epoch's validation was never run).
  mesh = make_mesh()
  split = ImageSet(np.zeros((4, 4, 4, 3), np.uint8), np.zeros(4, np.int32))
  loop = LoopConfig(epochs=3, batch_size=1, log_every_steps=2, checkpoint_every_steps=every)

  def run(workdir, hook):
    state, tx = _quadratic_state(0.1, mesh)
    fit(state, make_train_step(_quadratic_loss, tx, mesh), split, loop=loop, mesh=mesh,
        workdir=str(workdir), name="q", on_epoch_end=hook)
    return [(r["step"], "val" in r) for r in map(json.loads, open(workdir / "metrics.jsonl"))]

  whole = run(tmp_path / "a", lambda s, epoch: {"val": float(epoch)})
  crashed = []

  def crash_once(s, epoch):
    if epoch == 1 and not crashed:
      crashed.append(epoch)
      raise RuntimeError("crash")
    return {"val": float(epoch)}

  with pytest.raises(RuntimeError, match="crash"):
    run(tmp_path / "b", crash_once)
  with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
    f.write('{"step": 9, "loss"')   # a line the crash left unfinished
  assert run(tmp_path / "b", crash_once) == whole
  assert [s for s, _ in whole] == [2, 4, 4, 6, 8, 8, 10, 12, 12]


def test_each_epoch_draws_its_own_order_of_the_examples(tmp_path):
  # Epoch e's batches are the permutation of (seed, e): a loop that reused epoch 0's
  # order would show every epoch the same batches (a resumed run the same wrong ones).
  from fdjax.data.batching import epoch_order

  mesh = make_mesh()
  split = ImageSet(np.zeros((8, 4, 4, 3), np.uint8), np.arange(8, dtype=np.int32))
  loop = LoopConfig(epochs=2, batch_size=4, seed=3, log_every_steps=1,
                    checkpoint_every_steps=100)
  state, tx = _quadratic_state(0.1, mesh)

  def loss_fn(params, batch_stats, batch, key):
    return jnp.sum(params["w"] ** 2), (batch_stats,
                                       {"labels": batch["label"].astype(jnp.float32)})

  fit(state, make_train_step(loss_fn, tx, mesh), split, loop=loop, mesh=mesh,
      workdir=str(tmp_path), name="order")
  seen = [r["labels"] for r in map(json.loads, open(tmp_path / "metrics.jsonl"))]
  want = [epoch_order(8, seed=3, epoch=e, shuffle=True) for e in (0, 1)]
  assert [int(x) for batch in seen for x in batch] == [int(x) for w in want for x in w]
  assert list(want[0]) != list(want[1])
