"""fdjax.lock: one run per workdir; the OS frees the lock when the holder dies, kill -9 too."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fdjax.errors import ConfigError, UserError, WorkdirLockedError
from fdjax.lock import LOCK_NAME, read_holder, workdir_lock

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, **kwargs) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, **kwargs)


def test_second_lock_in_another_process_fails_at_once_naming_the_holder(tmp_path):
  workdir = tmp_path / "run"
  with workdir_lock(workdir) as path:
    assert path == workdir / LOCK_NAME
    holder = read_holder(workdir)
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    start = time.monotonic()
    proc = _python(f"""
        from fdjax.errors import WorkdirLockedError
        from fdjax.lock import workdir_lock
        try:
          with workdir_lock({str(workdir)!r}):
            print("acquired")
        except WorkdirLockedError as e:
          print(e)
          print(e.hint)
    """, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert time.monotonic() - start < 30  # fails at once: no waiting for the holder
  message, hint = out.strip().splitlines()
  assert message.startswith(f"workdir {workdir} is in use by PID {os.getpid()} on host "
                            f"{socket.gethostname()} (started ")
  assert "--workdir" in hint
  assert (workdir / LOCK_NAME).read_text() == ""  # released: no stale record


def test_lock_of_a_sigkilled_holder_is_free_again(tmp_path):
  workdir = tmp_path / "run"
  proc = _python(f"""
      import time
      from fdjax.lock import workdir_lock
      with workdir_lock({str(workdir)!r}):
        print("locked", flush=True)
        time.sleep(120)
  """, stdout=subprocess.PIPE)
  try:
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(WorkdirLockedError, match=f"in use by PID {proc.pid} on host"):
      with workdir_lock(workdir):
        pass
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert json.loads((workdir / LOCK_NAME).read_text())["pid"] == proc.pid  # record stays...
  with workdir_lock(workdir):  # ...but the lock died with the process
    assert read_holder(workdir)["pid"] == os.getpid()


def test_lock_is_exclusive_within_a_process_and_reusable_after_release(tmp_path):
  with workdir_lock(tmp_path):
    with pytest.raises(WorkdirLockedError) as info:
      with workdir_lock(tmp_path):
        pass
    assert isinstance(info.value, UserError)
  with workdir_lock(tmp_path):  # released by the first block
    pass


def test_missing_workdir_is_created(tmp_path):
  with workdir_lock(tmp_path / "a" / "b"):
    assert (tmp_path / "a" / "b" / LOCK_NAME).is_file()


def test_a_lock_file_that_cannot_be_opened_is_a_config_error(tmp_path):
  (tmp_path / LOCK_NAME).mkdir()   # a folder in the way (as a read-only file system: EROFS)
  with pytest.raises(ConfigError, match=r"cannot open its lock file .*\.fdjax\.lock"):
    with workdir_lock(tmp_path):
      pass


def test_a_file_system_without_locks_warns_and_runs_unlocked(tmp_path, monkeypatch, caplog):
  import errno
  import fcntl
  import logging

  def refuse(fd, operation):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

  monkeypatch.setattr(fcntl, "flock", refuse)   # a raw OSError traceback before
  with caplog.at_level(logging.WARNING):
    with workdir_lock(tmp_path) as path:
      assert path.exists()
  assert any("does not support locks" in r.getMessage() for r in caplog.records)
