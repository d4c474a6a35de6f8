"""Stopping on request (``fdjax.train.stop``): SIGTERM or the time limit makes ``fit`` save
the step it has reached and raise ``RunStopped``; resuming gives the uninterrupted run's
weights and optimiser state to the bit; the epoch's hook runs before a stop at an epoch's
end; a SIGTERM outside training stops at once; ``fdjax.main`` exits 75 and says how to
resume. The multi-process case (JAX's preemption service agreeing on the step) is in
``tests/test_multihost.py``."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdjax.data import ImageSet
from fdjax.train import (Checkpointer, LoopConfig, create_train_state, fit, make_mesh,
                         make_train_step)
from fdjax.train.stop import EXIT_STOPPED, STOP, RunStopped, armed, parse_duration

REPO = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH, EPOCHS = 4, 3


def _regression_loss(params, batch_stats, batch, key):
  """Least squares of the label on the images' channel means: each step's update depends
  on which rows the batch holds, so a resume that replays other batches differs."""
  x = batch["image"].astype(jnp.float32).mean(axis=(1, 2)) / 255.0     # [B, 3]
  error = x @ params["w"] + params["b"] - batch["label"].astype(jnp.float32)
  return jnp.mean(error ** 2), (batch_stats, {})


@pytest.fixture(scope="module")
def setup():
  rng = np.random.default_rng(0)
  split = ImageSet(rng.integers(0, 256, (8 * STEPS_PER_EPOCH, 4, 4, 3), dtype=np.uint8),
                   rng.integers(0, 5, 8 * STEPS_PER_EPOCH).astype(np.int32))
  mesh = make_mesh()
  tx = optax.adam(0.05)
  return split, mesh, tx, make_train_step(_regression_loss, tx, mesh)


def _fit(setup, workdir, step=None, on_epoch_end=None):
  split, mesh, tx, train_step = setup
  variables = {"params": {"w": jnp.zeros(3), "b": jnp.zeros(())}, "batch_stats": {}}
  state = create_train_state(variables, tx, jax.random.PRNGKey(0), mesh)
  loop = LoopConfig(epochs=EPOCHS, batch_size=8, seed=1, log_every_steps=100,
                    checkpoint_every_steps=100)
  return fit(state, step or train_step, split, loop=loop, mesh=mesh, workdir=str(workdir),
             name="unit", on_epoch_end=on_epoch_end)


def _sigterm_at(train_step, at: int, number=signal.SIGTERM):
  """``train_step`` that sends this process SIGTERM (or ``number``) while taking step
  ``at`` (1-based)."""
  calls = []

  def step(state, batch, frozen):
    calls.append(1)
    if len(calls) == at:
      os.kill(os.getpid(), number)
    return train_step(state, batch, frozen)
  return step


def _assert_same_state(a, b):
  leaves = lambda s: jax.tree.leaves((s.params, s.opt_state))  # noqa: E731
  for x, y in zip(leaves(a), leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def uninterrupted(setup, tmp_path_factory):
  return _fit(setup, tmp_path_factory.mktemp("full"))


def test_sigterm_mid_epoch_saves_that_step_and_resumes_exactly(setup, uninterrupted, tmp_path):
  before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  with armed():
    assert signal.getsignal(signal.SIGTERM) is not before[0]
    with pytest.raises(RunStopped) as info:
      _fit(setup, tmp_path, step=_sigterm_at(setup[3], 6))
    # the handlers stay a second (a second signal then acts at once: the multi-process
    # test below), and leaving armed() restores them
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
  stopped = info.value
  assert (stopped.reason, stopped.stage, stopped.step) == ("SIGTERM", "unit", 6)
  assert "stopped on SIGTERM in stage unit at step 6" in str(stopped)
  assert Checkpointer(tmp_path / "checkpoints").all_steps() == [6]   # no periodic one before
  resumed = _fit(setup, tmp_path)
  assert int(resumed.step) == int(uninterrupted.step) == EPOCHS * STEPS_PER_EPOCH
  _assert_same_state(resumed, uninterrupted)


def test_a_stop_at_an_epochs_end_runs_that_epochs_hook_first(setup, uninterrupted, tmp_path):
  hooks = []

  def hook(state, epoch):
    hooks.append((epoch, int(state.step)))
    return {"hooked": float(epoch)}

  with armed(), pytest.raises(RunStopped) as info:
    _fit(setup, tmp_path, step=_sigterm_at(setup[3], STEPS_PER_EPOCH), on_epoch_end=hook)
  assert info.value.step == STEPS_PER_EPOCH and hooks == [(0, STEPS_PER_EPOCH)]
  resumed = _fit(setup, tmp_path, on_epoch_end=hook)   # epoch 0's hook is not run twice
  assert hooks == [(e, (e + 1) * STEPS_PER_EPOCH) for e in range(EPOCHS)]
  _assert_same_state(resumed, uninterrupted)


@pytest.mark.parametrize("epoch", [0, EPOCHS - 1])
def test_a_stop_requested_while_the_hook_runs_stops_after_it(setup, uninterrupted, tmp_path,
                                                             epoch):
  """The last epoch too: fit does not return as if finished (the run would go on into
  evaluation with the request forgotten)."""
  def hook(state, e):
    if e == epoch:
      os.kill(os.getpid(), signal.SIGTERM)
    return {}

  with armed(), pytest.raises(RunStopped) as info:
    _fit(setup, tmp_path, on_epoch_end=hook)
  at = (epoch + 1) * STEPS_PER_EPOCH
  assert (info.value.reason, info.value.step) == ("SIGTERM", at)
  assert Checkpointer(tmp_path / "checkpoints").all_steps() == [at]
  _assert_same_state(_fit(setup, tmp_path), uninterrupted)


def test_ctrl_c_in_training_stops_after_the_step_and_says_so(setup, tmp_path, capfd):
  with armed(), pytest.raises(RunStopped) as info:
    _fit(setup, tmp_path, step=_sigterm_at(setup[3], 3, signal.SIGINT))
  assert (info.value.reason, info.value.step) == ("Ctrl-C", 3)
  assert ("Ctrl-C: saving the step in training, then stopping (again to stop at once)"
          in capfd.readouterr().err)
  assert Checkpointer(tmp_path / "checkpoints").all_steps() == [3]


def test_one_ctrl_c_delivered_twice_still_saves_the_step(setup, tmp_path):
  """Under ``timeout --foreground`` (``launch/gpu_sweep.sh``) a Ctrl-C reaches fdjax from
  the terminal and again from ``timeout``: the copy raised KeyboardInterrupt (stop at
  once, nothing saved)."""
  def twice(state, batch, frozen):
    if twice.calls == 2:
      os.kill(os.getpid(), signal.SIGINT)
      os.kill(os.getpid(), signal.SIGINT)
    twice.calls += 1
    return setup[3](state, batch, frozen)

  twice.calls = 0
  with armed(), pytest.raises(RunStopped) as info:
    _fit(setup, tmp_path, step=twice)
  assert (info.value.reason, info.value.step) == ("Ctrl-C", 3)
  assert Checkpointer(tmp_path / "checkpoints").all_steps() == [3]


def test_the_time_limit_stops_after_the_step_that_passes_it(setup, tmp_path):
  with armed(time_limit_s=0.0), pytest.raises(RunStopped) as info:
    _fit(setup, tmp_path)
  assert (info.value.reason, info.value.step) == ("time limit", 1)
  assert Checkpointer(tmp_path / "checkpoints").all_steps() == [1]


def test_sigterm_outside_training_stops_at_once_and_unarmed_runs_ignore_stop():
  with armed(), pytest.raises(RunStopped, match="outside training") as info:
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):   # the handler runs between bytecodes of the main thread
      sum(range(100))
  assert info.value.step is None and STOP.reason == "SIGTERM"
  assert STOP.poll() is None   # disarmed: fit never stops


def test_sigterm_while_reading_saved_weights_is_a_stop_not_a_damaged_file(setup, uninterrupted,
                                                                          tmp_path, monkeypatch):
  """A signal outside training raises wherever the program is: inside the reads that report
  any failure as a damaged file (``CorruptCheckpointError``, whose hint says to delete
  good work) it must stay a stop."""
  import orbax.checkpoint as ocp

  from fdjax.train.variables_io import load_variables, save_variables

  host = {"params": {"w": np.arange(3.0, dtype=np.float32)}}
  save_variables(str(tmp_path / "v"), host)
  saved = Checkpointer(tmp_path / "c")
  saved.save(uninterrupted)
  saved.close()

  def sigterm(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):   # the handler runs between bytecodes of the main thread
      sum(range(100))
  monkeypatch.setattr(ocp.StandardCheckpointer, "restore", sigterm)
  with armed(), pytest.raises(RunStopped, match="outside training"):
    load_variables(str(tmp_path / "v"), host)
  monkeypatch.setattr(ocp.CheckpointManager, "restore", sigterm)
  checkpointer = Checkpointer(tmp_path / "c")
  with armed(), pytest.raises(RunStopped, match="outside training"):
    checkpointer.restore(uninterrupted)
  checkpointer.close()


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("50m", 3000), ("1.5h", 5400),
                                           (" 2 m ", 120), (".5h", 1800)])
def test_parse_duration(text, seconds):
  assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["50", "5x", "-1m", "m", "1e3s", ""])
def test_a_duration_needs_a_number_and_a_unit(text):
  with pytest.raises(ValueError, match="a number and a unit s, m or h"):
    parse_duration(text)


def _main(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "fdjax.main", "--xla_cache=none", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)


def test_the_command_line_exits_75_with_the_checkpoint_and_how_to_resume(tmp_path):
  result = _main("--config=configs/quickstart.py:tiny", "--config.degradations=jpeg",
                 f"--workdir={tmp_path}", "--time_limit=0s")
  assert result.returncode == EXIT_STOPPED, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert lines[-2].startswith("stopped on time limit in stage clean at step 1, checkpoint "
                              "saved in "), lines[-2:]
  assert lines[-1] == "resume: run the same command again"
  assert Checkpointer(lines[-2].rsplit(" in ", 1)[1]).all_steps() == [1]
  bad = _main("--config=configs/quickstart.py:tiny", f"--workdir={tmp_path / 'b'}",
              "--time_limit=50")
  assert bad.returncode == 2 and "error: --time_limit: a duration is a number" in bad.stderr


def test_ctrl_c_in_a_terminal_stops_launch_local_sh_with_its_last_lines_logged(tmp_path):
  """A terminal's Ctrl-C signals the whole foreground process group: fdjax and the tee of
  ``launch/local.sh``. fdjax saves its step; tee (``-i``) lives on to show and log it."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  command = ["bash", "launch/local.sh", "configs/quickstart.py:tiny", str(tmp_path),
             "--config.degradations=jpeg", "--config.log_every_steps=1", "--xla_cache=none"]
  # Ctrl-C's default action in the launched shell (a test worker may ignore SIGINT, and
  # an ignored signal stays ignored through exec), set by a Python that then execs it.
  with_default_sigint = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                         "os.execvp(sys.argv[1], sys.argv[1:])")
  proc = subprocess.Popen([sys.executable, "-c", with_default_sigint, *command], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)   # its own process group, as a terminal's job
  for line in proc.stdout:
    if "[clean] step 2/" in line:
      os.killpg(proc.pid, signal.SIGINT)
      break
  rest = proc.stdout.read()
  assert proc.wait(timeout=120) == EXIT_STOPPED, rest[-3000:]
  logged = (tmp_path / "log.txt").read_text().splitlines()
  assert "Ctrl-C: saving the step in training, then stopping (again to stop at once)" in logged
  assert logged[-2].startswith("stopped on Ctrl-C in stage clean at step ")
  assert logged[-1] == "resume: run the same command again"


@pytest.mark.long
def test_a_run_stopped_by_sigterm_and_rerun_gives_the_uninterrupted_results(tmp_path):
  """The whole quickstart (one degradation), stopped by a SIGTERM from outside while its
  FusionDistill stage trains, then rerun: the same results.json as a run never stopped."""
  import json
  args = ["--config=configs/quickstart.py:tiny", "--config.degradations=jpeg",
          "--config.log_every_steps=1", "--config.methods=oracle,vanilla,fusiondistill"]
  assert _main(*args, f"--workdir={tmp_path / 'full'}").returncode == 0
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, "-m", "fdjax.main", "--xla_cache=none", *args,
                           f"--workdir={tmp_path / 'stopped'}"], cwd=REPO, env=env,
                          stderr=subprocess.PIPE, text=True)
  lines = []
  for line in proc.stderr:   # progress lines: stop during FusionDistill's step 3
    lines.append(line)
    if "[fusiondistill] step 3/" in line:
      proc.send_signal(signal.SIGTERM)
      break
  lines += proc.stderr.readlines()
  assert proc.wait(timeout=300) == EXIT_STOPPED, "".join(lines[-20:])
  assert any(line.startswith("stopped on SIGTERM in stage fusiondistill at step ")
             for line in lines), "".join(lines[-5:])
  rerun = _main(*args, f"--workdir={tmp_path / 'stopped'}")
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "[clean] complete; reusing" in rerun.stderr       # nothing done twice
  assert "[fusiondistill] resumed from step" in rerun.stderr
  full, stopped = (json.loads((tmp_path / w / "results.json").read_text())
                   for w in ("full", "stopped"))
  for key in ("records", "summary", "fingerprints"):
    assert stopped[key] == full[key], key


def test_ctrl_c_of_a_multi_process_run_becomes_the_preemption_services_sigterm(monkeypatch,
                                                                              capfd, request):
  # Several processes: no Python SIGTERM handler (JAX's preemption service has it), but
  # Ctrl-C is turned into this process's SIGTERM, so every process saves one agreed step
  # (before, it raised KeyboardInterrupt in process 0 mid-step: nothing saved).
  from fdjax.train import stop

  sent = []
  monkeypatch.setattr(stop.jax, "process_count", lambda: 2)
  monkeypatch.setattr(stop.os, "kill", lambda pid, number: sent.append((pid, number)))
  original = signal.signal(signal.SIGINT, signal.default_int_handler)  # a worker may ignore it
  request.addfinalizer(lambda: signal.signal(signal.SIGINT, original))
  before = signal.getsignal(signal.SIGINT)
  term_before = signal.getsignal(signal.SIGTERM)
  now = [100.0]
  monkeypatch.setattr(stop.time, "monotonic", lambda: now[0])
  with armed():
    assert signal.getsignal(signal.SIGTERM) is term_before     # JAX's stays
    handler = signal.getsignal(signal.SIGINT)
    assert handler is not before
    handler(signal.SIGINT, None)
    assert sent == [(os.getpid(), signal.SIGTERM)]
    now[0] += 0.5
    handler(signal.SIGINT, None)                                # the same Ctrl-C, twice
    assert sent == [(os.getpid(), signal.SIGTERM)]
    now[0] += 2.0
    with pytest.raises(KeyboardInterrupt):                      # a second Ctrl-C: as before
      handler(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is before
  assert "Ctrl-C: every process saves the same step" in capfd.readouterr().err
  assert signal.getsignal(signal.SIGINT) is before
