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


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_stop_raised_inside_a_gc_callback_is_raised_again_where_the_run_moves_on():
  """Python ignores an exception raised in a gc callback (JAX registers one): the handler's
  RunStopped is lost there, and ``STOP.check`` (a stage's start, an evaluation's) raises
  it again."""
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


def test_the_command_notes_ctrl_c_before_jax_loads(monkeypatch):
  """``fdjax.main.run`` installs the early handler before anything else it does."""
  from absl import app

  from fdjax import cpu_flags, main
  calls = []
  monkeypatch.setattr(early_stop, "install", lambda: calls.append("install"))
  monkeypatch.setattr(cpu_flags, "apply_defaults", lambda: calls.append("cpu_flags"))
  monkeypatch.setattr(app, "run", lambda *a, **k: calls.append("app.run"))
  main.run()
  assert calls == ["install", "cpu_flags", "app.run"]
