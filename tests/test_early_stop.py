"""A Ctrl-C in a run's first seconds (``fdjax.early_stop``) and a stop request whose raise
was lost in a garbage-collection callback (``STOP.check``): both stop the run as any
Ctrl-C outside training does, with exit status 75, never a traceback nor a finished run."""

import gc
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fdjax import early_stop
from fdjax.train import stop
from fdjax.train.stop import EXIT_STOPPED, STOP, RunStopped

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def default_sigint():
  """Python's own SIGINT handler for the test (a test worker may have another), restored
  after, with no request left over."""
  before = signal.signal(signal.SIGINT, signal.default_int_handler)
  early_stop.take()
  yield
  signal.signal(signal.SIGINT, before)
  early_stop.take()


def test_an_early_ctrl_c_is_noted_once_and_a_second_one_later_stops_at_once(
    default_sigint, monkeypatch, capsys):
  clock = [100.0]
  monkeypatch.setattr(early_stop.time, "monotonic", lambda: clock[0])
  early_stop.install()
  signal.raise_signal(signal.SIGINT)        # noted: no KeyboardInterrupt
  assert "Ctrl-C: the run stops as soon as it has loaded" in capsys.readouterr().err
  clock[0] += 0.5
  signal.raise_signal(signal.SIGINT)        # the same press forwarded: ignored
  clock[0] += 1.0
  with pytest.raises(KeyboardInterrupt):    # a second press: at once
    signal.raise_signal(signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  assert early_stop.take() and not early_stop.take()


def test_install_leaves_an_ignored_sigint_ignored(default_sigint):
  signal.signal(signal.SIGINT, signal.SIG_IGN)   # launch/local.sh's other processes
  early_stop.install()
  assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_arming_after_an_early_ctrl_c_stops_the_run_at_once(default_sigint):
  early_stop.install()
  signal.raise_signal(signal.SIGINT)
  reached = []
  with pytest.raises(RunStopped, match="stopped on Ctrl-C outside training"):
    with stop.armed():
      reached.append(True)
  assert not reached and not early_stop.take()
  with stop.armed():   # the request was handed over: the next run is not stopped
    reached.append(True)
  assert reached == [True]


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_stop_raised_inside_a_gc_callback_is_raised_again_where_the_run_moves_on():
  """Python ignores an exception raised in a gc callback (JAX registers one): the handler's
  RunStopped is lost there, and ``STOP.check`` (a stage's start, an evaluation's) raises
  it again. Python's "Exception ignored in" traceback of it is not printed (here: no
  unraisable-exception warning from pytest's hook, which the armed stop's hook wraps)."""
  lost = []

  def callback(phase, info):
    if phase == "start" and not lost:
      lost.append(True)
      STOP._on_signal(signal.SIGINT, None)   # what the armed handler does outside training

  with stop.armed():
    gc.callbacks.append(callback)
    try:
      gc.collect()   # "Exception ignored in: <function callback ...>"
    finally:
      gc.callbacks.remove(callback)
    assert lost and STOP.reason == "Ctrl-C"
    with pytest.raises(RunStopped, match="stopped on Ctrl-C outside training"):
      STOP.check()
  STOP.check()   # disarmed: nothing


def test_a_ctrl_c_while_the_command_loads_exits_75_without_a_traceback(tmp_path):
  """The Ctrl-C comes right after ``early_stop.install`` (the program says 'ready' then),
  while fdjax.main, JAX and the libraries are still being imported."""
  code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
          "from fdjax import early_stop; early_stop.install(); "
          "print('ready', flush=True); from fdjax import main; "
          "sys.argv = ['fdjax.main'] + sys.argv[1:]; main.run()")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, "-c", code, "--config=configs/quickstart.py:tiny",
                           f"--workdir={tmp_path}", "--xla_cache=none"], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "ready"
  proc.send_signal(signal.SIGINT)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == EXIT_STOPPED, err[-3000:]
  assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
  lines = err.strip().splitlines()
  assert lines[-2:] == ["stopped on Ctrl-C outside training; finished stages are kept",
                        "resume: run the same command again"]
  assert not (tmp_path / "seed_0").exists()   # nothing trained


def test_the_command_notes_ctrl_c_before_jax_loads():
  """``fdjax.main.run`` installs the early handler before anything else it does (in a
  subprocess: importing fdjax.main defines its absl flags for the whole process)."""
  code = ("from absl import app; from fdjax import cpu_flags, early_stop, main; calls = []; "
          "early_stop.install = lambda: calls.append('install'); "
          "cpu_flags.apply_defaults = lambda: calls.append('cpu_flags'); "
          "app.run = lambda *a, **k: calls.append('app.run'); main.run(); print(calls)")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=120)
  assert out.stdout.strip() == "['install', 'cpu_flags', 'app.run']", out.stderr[-2000:]


def test_a_second_ctrl_c_in_training_still_stops_at_once_after_an_early_install(
    default_sigint, monkeypatch):
  """Arming saves the handler it replaces and puts it back for a second signal: that must
  be Python's own, not the early handler (which would note the second press and go on)."""
  clock = [100.0]
  monkeypatch.setattr(stop.time, "monotonic", lambda: clock[0])
  early_stop.install()
  with stop.armed():
    assert signal.getsignal(signal.SIGINT) == STOP._on_signal
    with STOP.training():
      signal.raise_signal(signal.SIGINT)   # the first: noted, training saves and stops
      assert STOP.reason == "Ctrl-C"
      clock[0] += 1.5
      with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_lost_stop_is_raised_at_the_next_stage_evaluation_or_fit(tmp_path):
  """A stop whose raise a gc callback swallowed (its reason set, the run going on): the
  next stage, evaluation or training loop raises it before doing any work."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from fdjax.config_fields import load_config_file
  from fdjax.data import ImageSet
  from fdjax.study import make_context
  from fdjax.study.evaluator import Evaluator
  from fdjax.study.runner import Runner, Stage
  from fdjax.train import create_train_state, fit, make_mesh, make_train_step
  from fdjax.train.loop import LoopConfig

  ctx = make_context(load_config_file(f"{REPO / 'configs' / 'quickstart.py'}:tiny"),
                     str(tmp_path / "seed_0"))
  built = []
  runner = Runner(ctx, {"s": Stage("s", (), lambda r: built.append(1))})
  mesh = make_mesh()
  tx = optax.sgd(0.1)
  state = create_train_state({"params": {"w": jnp.ones((3,))}, "batch_stats": {}}, tx,
                             jax.random.PRNGKey(0), mesh)
  step = make_train_step(lambda p, b, batch, k: (jnp.sum(p["w"] ** 2), (b, {})), tx, mesh)
  split = ImageSet(np.zeros((8, 4, 4, 3), np.uint8), np.zeros(8, np.int32))
  calls = {"stage": lambda: runner.get("s"),
           "evaluation": lambda: Evaluator(ctx)("m", {"params": {"w": np.ones(2)}}),
           "fit": lambda: fit(state, step, split, mesh=mesh, workdir=str(tmp_path / "fit"),
                              name="f", loop=LoopConfig(epochs=1, batch_size=2))}
  for where, call in calls.items():
    with stop.armed():
      STOP._reason = "Ctrl-C"          # what a lost raise leaves: the reason, no exception
      with pytest.raises(RunStopped, match="stopped on Ctrl-C outside training"):
        call()
  assert not built   # no stage built, no step trained (no metrics line, no checkpoint):
  metrics = tmp_path / "fit" / "metrics.jsonl"
  assert not metrics.exists() or not metrics.read_text().strip()
  assert not list((tmp_path / "fit").rglob("_CHECKPOINT_METADATA"))
