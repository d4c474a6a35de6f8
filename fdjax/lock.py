"""An exclusive lock on a workdir for the whole of a run.

    with workdir_lock(workdir):
      ...  # train, evaluate, write results

takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<workdir>/.fdjax.lock`` (creating the
workdir and the file if needed) and writes the holder's PID, host, start time and
command line into the file as one JSON line. A second run on the same workdir fails
at once with ``WorkdirLockedError`` naming the holder: "workdir X is in use by PID N on
host H (started ...)".

The lock belongs to the open file, so the operating system releases it when the
holder exits in any way, ``kill -9`` included: a dead run never leaves a stale lock,
and the file's content (which may outlive its holder) is only ever read to describe a
live holder. The file itself is never deleted (deleting a lock file races with a
process that has just opened it). The lock is not re-entrant: a second
``workdir_lock`` on the same workdir fails even in the same process. Child processes
do not inherit it (Python opens files non-inheritable). On NFS, Linux emulates
``flock`` with NFS byte-range locks, which also exclude other hosts (not with the mount
options ``nolock`` or ``local_lock=flock``, nor on FUSE file systems such as gcsfuse,
where the lock keeps apart the runs of one host only). A file system that refuses locks
altogether (``ENOLCK``, ``EOPNOTSUPP``) gets one warning line, and the run goes on
unlocked. A lock file that cannot be opened (a read-only file system, a folder not the
user's) is a ``ConfigError`` naming it.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from absl import logging

from fdjax.errors import ConfigError, WorkdirLockedError

LOCK_NAME = ".fdjax.lock"
_READ_HOLDER_FOR_S = 1.0  # how long to wait for a just-started holder to write its record
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)   # a file system without locks


def make_folder(path: str | os.PathLike, what: str) -> None:
  """``mkdir -p path``; a ``ConfigError`` naming ``what`` (e.g. '--workdir') when it
  cannot be made (a file is in the way, no permission, a read-only file system)."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"{what} {path} is a file, not a folder", hint=f"choose another {what}")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"{what} {path}: cannot make the folder ({e.strerror or e})",
                      hint=f"choose another {what}") from None


def lock_path(workdir: str | os.PathLike) -> Path:
  """``<workdir>/.fdjax.lock``."""
  return Path(workdir) / LOCK_NAME


def _holder_record() -> dict:
  return {"pid": os.getpid(), "host": socket.gethostname(),
          "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
          "argv": sys.argv}


def read_holder(workdir: str | os.PathLike) -> dict | None:
  """The record the current holder wrote (``pid``, ``host``, ``started``, ``argv``), or
  None when the file is missing, empty or unreadable. Only meaningful while the lock
  is held: a finished run's record may remain in the file."""
  try:
    text = lock_path(workdir).read_text()
    record = json.loads(text)
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


def _describe(workdir: Path, holder: dict | None) -> str:
  if not holder:
    return f"workdir {workdir} is in use by another fdjax run (its PID is not recorded yet)"
  return (f"workdir {workdir} is in use by PID {holder.get('pid', '?')} on host "
          f"{holder.get('host', '?')} (started {holder.get('started', '?')})")


@contextlib.contextmanager
def workdir_lock(workdir: str | os.PathLike) -> Iterator[Path]:
  """Holds the exclusive lock on ``workdir`` for the ``with`` block; yields the lock
  file's path. Raises ``WorkdirLockedError`` at once if another open file holds it."""
  workdir = Path(workdir).absolute()
  make_folder(workdir, "--workdir")
  path = lock_path(workdir)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:   # a read-only file system, a folder not ours, a folder in the way
    raise ConfigError(f"--workdir {workdir}: cannot open its lock file {path} "
                      f"({e.strerror or e})",
                      hint="use a --workdir this user can write to") from None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno in _NO_LOCKS:
        logging.warning("the file system of --workdir %s does not support locks (%s): "
                        "nothing keeps a second run off this workdir", workdir,
                        e.strerror or e)
      elif e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      else:
        holder = read_holder(workdir)
        deadline = time.monotonic() + _READ_HOLDER_FOR_S
        while holder is None and time.monotonic() < deadline:  # holder writes its record
          time.sleep(0.05)
          holder = read_holder(workdir)
        raise WorkdirLockedError(
            _describe(workdir, holder),
            hint="wait for that run to finish, or use another --workdir") from None
    record = (json.dumps(_holder_record()) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
    os.fsync(fd)
    try:
      yield path
    finally:
      os.ftruncate(fd, 0)  # still locked: no other run has written its record yet
  finally:
    os.close(fd)  # releases the lock
