"""A hang-up (SIGHUP: the terminal closed, the ssh connection dropped) is a stop request
(``fdjax.train.stop``): the step in training is saved, copies of the signal never kill,
the console that went to the terminal or a pipe goes to ``/dev/null`` (so the process
still exits 75, not 120 on its last flush), a console redirected to a file keeps its
file, ``nohup`` keeps SIGHUP ignored, and several processes turn it into the preemption
service's SIGTERM."""

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fdjax import console
from fdjax.console import silence_console
from fdjax.train import Checkpointer
from fdjax.train import stop
from fdjax.train.stop import EXIT_STOPPED, RunStopped, armed

import test_stop
from test_stop import _fit

setup = test_stop.setup   # a fixture

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def silenced(monkeypatch, request):
  """Records ``silence_console`` calls instead of touching this worker's stdout/stderr
  (pytest-xdist talks to its workers through them). SIGHUP's action is the default, as
  in a terminal, for the test: under ``nohup`` (a CI runner's may be) it is ignored, and
  arming rightly leaves it so."""
  original = signal.signal(signal.SIGHUP, signal.SIG_DFL)
  request.addfinalizer(lambda: signal.signal(signal.SIGHUP, original))
  calls = []
  monkeypatch.setattr(console, "silence_console", lambda: calls.append(1))
  return calls


def test_a_hang_up_in_training_saves_the_step_and_its_copies_never_kill(setup, tmp_path,
                                                                         silenced):
  def hang_ups(state, batch, frozen):
    hang_ups.calls += 1
    if hang_ups.calls == 3:            # the kernel's SIGHUP, then the shell's
      os.kill(os.getpid(), signal.SIGHUP)
      os.kill(os.getpid(), signal.SIGHUP)
    return setup[3](state, batch, frozen)

  hang_ups.calls = 0
  before = signal.getsignal(signal.SIGHUP)
  with armed(), pytest.raises(RunStopped) as info:
    _fit(setup, tmp_path, step=hang_ups)
  assert (info.value.reason, info.value.step) == ("hang-up", 3)
  assert Checkpointer(tmp_path / "checkpoints").all_steps() == [3]
  assert silenced == [1]                     # once, not once per copy
  assert signal.getsignal(signal.SIGHUP) is before


def test_a_later_copy_of_the_hang_up_is_ignored_where_ctrl_c_would_act_at_once(monkeypatch,
                                                                               silenced):
  now = [100.0]
  monkeypatch.setattr(stop.time, "monotonic", lambda: now[0])
  with armed():
    handler = signal.getsignal(signal.SIGHUP)
    with stop.STOP.training():
      handler(signal.SIGHUP, None)
      assert stop.STOP.poll() == "hang-up"
      now[0] += 60.0                         # the shell's copy, a minute later
      handler(signal.SIGHUP, None)           # would kill under SIG_DFL
      assert stop.STOP.poll() == "hang-up"
  assert silenced == [1]


def test_a_sigterm_a_second_after_a_hang_up_kills_one_with_it_is_the_same_request(
    monkeypatch, silenced, request):
  """A supervisor's SIGTERM after a hang-up is the second signal (it acts at once, under
  the handler from before arming); a closing session sends both at once: one request."""
  now, raised = [100.0], []
  monkeypatch.setattr(stop.time, "monotonic", lambda: now[0])
  monkeypatch.setattr(stop.signal, "raise_signal", raised.append)
  for later, acts in ((0.5, False), (1.5, True)):
    with armed():
      hang_up, term = (signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM))
      with stop.STOP.training():
        hang_up(signal.SIGHUP, None)
        now[0] += later
        term(signal.SIGTERM, None)
        assert stop.STOP.poll() == "hang-up"
        assert raised == ([signal.SIGTERM] if acts else []), later
        # acting at once: under the handlers from before arming
        assert (signal.getsignal(signal.SIGTERM) is not term) == acts
    raised.clear()


def test_a_hang_up_outside_training_stops_at_once(silenced):
  with armed(), pytest.raises(RunStopped, match="stopped on hang-up outside training"):
    os.kill(os.getpid(), signal.SIGHUP)
    for _ in range(1000):   # the handler runs between bytecodes of the main thread
      sum(range(100))


def test_nohup_keeps_sighup_ignored(request):
  original = signal.signal(signal.SIGHUP, signal.SIG_IGN)
  request.addfinalizer(lambda: signal.signal(signal.SIGHUP, original))
  with armed():
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL   # the others armed
  assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def test_a_multi_process_hang_up_becomes_the_preemption_services_sigterm_once(monkeypatch,
                                                                           silenced, capfd):
  sent = []
  monkeypatch.setattr(stop.jax, "process_count", lambda: 2)
  monkeypatch.setattr(stop.os, "kill", lambda pid, number: sent.append((pid, number)))
  term_before = signal.getsignal(signal.SIGTERM)
  with armed():
    assert signal.getsignal(signal.SIGTERM) is term_before     # JAX's stays
    handler = signal.getsignal(signal.SIGHUP)
    handler(signal.SIGHUP, None)
    handler(signal.SIGHUP, None)
  assert sent == [(os.getpid(), signal.SIGTERM)]
  assert silenced == [1]
  assert "hang-up: every process saves the same step, then stops" in capfd.readouterr().err


def _is_devnull(fd: int) -> bool:
  here, null = os.fstat(fd), os.stat(os.devnull)
  return stat.S_ISCHR(here.st_mode) and here.st_rdev == null.st_rdev


def test_silence_console_sends_pipes_to_devnull_and_keeps_files(tmp_path):
  read_end, write_end = os.pipe()
  log = os.open(tmp_path / "log.txt", os.O_WRONLY | os.O_CREAT)
  try:
    silence_console((write_end, log))
    assert _is_devnull(write_end) and not _is_devnull(log)
    assert os.read(read_end, 10) == b""      # the pipe's last writer is gone: end of file
    os.write(write_end, b"lost")
    os.write(log, b"kept")
  finally:
    for fd in (read_end, write_end, log):
      os.close(fd)
  assert (tmp_path / "log.txt").read_bytes() == b"kept"


# SIGHUP's default action, as in a terminal (under nohup it is ignored, and an ignored
# signal stays ignored through exec), set by a Python that then execs the command.
_DEFAULT_SIGHUP = ("import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL); "
                   "os.execvp(sys.argv[1], sys.argv[1:])")

_PROCESS = textwrap.dedent("""
    import signal, sys
    from fdjax.train.stop import EXIT_STOPPED, RunStopped, STOP, armed
    signal.signal(signal.SIGHUP, signal.SIG_DFL)   # as in a terminal (a test may ignore it)
    try:
      with armed(), STOP.training():
        print("ready", flush=True)
        while STOP.poll() is None:
          pass
        sys.stdout.write("unflushed " * 1000)    # left for Python's last flush
        raise RunStopped(STOP.reason)
    except RunStopped as e:
      sys.stderr.write(f"{e}\\n")
      raise SystemExit(EXIT_STOPPED)
    """)


def test_a_process_whose_pipe_reader_hung_up_still_exits_75(tmp_path):
  """Before, a hang-up killed the process (its default action); with only the handler,
  Python's last flush into the closed pipe would end it with status 120."""
  proc = subprocess.Popen([sys.executable, "-c", _PROCESS], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  assert proc.stdout.readline() == "ready\n"
  proc.send_signal(signal.SIGHUP)
  proc.stdout.close()                        # the reader (a tee in the terminal) is gone
  assert proc.wait(timeout=60) == EXIT_STOPPED


@pytest.mark.long
def test_a_run_hung_up_in_training_resumes_from_the_saved_step(tmp_path):
  """``fdjax.main`` with its console in a pipe, hung up while its first stage trains: exit
  75 with that stage's step saved. The same command resumes from it and finishes with
  status 0 though its stdout is a pipe nobody reads (the tables are in the files)."""
  args = [sys.executable, "-m", "fdjax.main", "--xla_cache=none",
          "--config=configs/quickstart.py:tiny", "--config.degradations=jpeg",
          "--config.log_every_steps=1", "--config.methods=oracle", f"--workdir={tmp_path}"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, "-c", _DEFAULT_SIGHUP, *args], cwd=REPO, env=env,
                          stderr=subprocess.PIPE, text=True)
  for line in proc.stderr:
    if "[clean] step 2/" in line:
      proc.send_signal(signal.SIGHUP)
      break
  proc.stderr.read()                         # end of file: the console went to /dev/null
  assert proc.wait(timeout=120) == EXIT_STOPPED
  (checkpoints,) = tmp_path.rglob("clean/checkpoints")
  saved = Checkpointer(checkpoints).all_steps()
  assert len(saved) == 1 and saved[0] >= 2, saved
  read_end, write_end = os.pipe()
  os.close(read_end)                         # the tables' print meets a closed pipe
  try:
    rerun = subprocess.run(args, cwd=REPO, env=env, stdout=write_end, stderr=subprocess.PIPE,
                           text=True, timeout=300)
  finally:
    os.close(write_end)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f"[clean] resumed from step {saved[0]}" in rerun.stderr
  assert (tmp_path / "results.md").is_file()
