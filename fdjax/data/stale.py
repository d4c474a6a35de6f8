"""Temporary directories that name their owner, and removal of those left by dead runs.

Work that must appear atomically (an archive extraction, a decoded-array cache, the
parallel decoder's scratch files) is written into a temporary directory first. A run
killed meanwhile (``kill -9``, power loss) leaves that directory behind. To tell such
leftovers from the work of a run still in progress, ``make_temp_dir`` puts the owner
into the name::

    <prefix>@<host>@<pid>@<random><suffix>   e.g. .cifar-1a2b3c@node7@4242@k3j_x9.partial

(the host has no '@', so the name parses from the right whatever the prefix holds).

``remove_stale(parent, prefix, suffix)`` then deletes every such directory in
``parent`` whose owner is gone:

* owner on this host (same hostname): stale when no process with that PID exists
  (``os.kill(pid, 0)``). A PID reused by an unrelated process keeps the directory
  (conservative; it is removed once that process ends too);
* owner on another host (a cache on a shared filesystem), or a name without an owner
  (written by fdjax before owners were recorded): stale when the directory was last
  modified more than ``FOREIGN_AGE_S`` (one day) ago.

Caveat: two containers that share a hostname and a cache volume but not a PID
namespace cannot see each other's processes; give them different hostnames (the
default) or separate caches.

This module imports only the standard library.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

FOREIGN_AGE_S = 24 * 3600  # age after which an unowned / other host's directory is stale

_RANDOM = re.compile(r"[A-Za-z0-9_]+")
log = logging.getLogger(__name__)


def hostname() -> str:
  """This host's name with every character other than ``[A-Za-z0-9.-]`` as ``_``."""
  return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"


def make_temp_dir(parent: str | os.PathLike, prefix: str, suffix: str = "") -> Path:
  """Creates ``parent/<prefix>@<host>@<pid>@<random><suffix>`` (mode 0700), returns it."""
  return Path(tempfile.mkdtemp(prefix=f"{prefix}@{hostname()}@{os.getpid()}@", suffix=suffix,
                               dir=os.fspath(parent)))


def owner(name: str, suffix: str = "") -> tuple[str, int] | None:
  """``(host, pid)`` encoded in a ``make_temp_dir`` name (``suffix`` stripped), else None."""
  if suffix:
    if not name.endswith(suffix):
      return None
    name = name[:-len(suffix)]
  parts = name.rsplit("@", 3)
  if len(parts) != 4 or not parts[2].isdigit() or not _RANDOM.fullmatch(parts[3]):
    return None
  return parts[1], int(parts[2])  # parts[0] is the prefix (which may contain '@')


def pid_alive(pid: int) -> bool:
  """True when a process with ``pid`` exists on this host (any user's)."""
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, belongs to another user
    return True
  except OSError:
    return True  # unknown: keep the directory
  return True


def is_stale(path: str | os.PathLike, suffix: str = "", *,
             foreign_age_s: float = FOREIGN_AGE_S, now: float | None = None) -> bool:
  """Whether ``path`` (a ``make_temp_dir`` directory) was left by a run that is gone
  (see the module docstring for the rule)."""
  path = Path(path)
  found = owner(path.name, suffix)
  if found is not None and found[0] == hostname():
    return not pid_alive(found[1])
  try:
    age = (time.time() if now is None else now) - path.stat().st_mtime
  except FileNotFoundError:
    return False  # already gone
  return age > foreign_age_s


def remove_stale(parent: str | os.PathLike, prefix: str, suffix: str = "", *,
                 foreign_age_s: float = FOREIGN_AGE_S) -> list[Path]:
  """Deletes the stale directories ``parent/<prefix>*<suffix>``; returns their paths.

  Never raises for a missing or unreadable ``parent`` or a directory that another
  process removes first; a directory that cannot be deleted is logged and skipped.
  """
  try:
    entries = list(os.scandir(parent))
  except OSError:
    return []
  removed = []
  for entry in entries:
    name = entry.name
    if not (name.startswith(prefix) and name.endswith(suffix)):
      continue
    try:
      if not entry.is_dir(follow_symlinks=False):
        continue
    except OSError:
      continue
    path = Path(entry.path)
    if not is_stale(path, suffix, foreign_age_s=foreign_age_s):
      continue
    found = owner(name, suffix)
    why = (f"process {found[1]} on {found[0]} is gone" if found and found[0] == hostname()
           else f"no owner on this host, unchanged for over {foreign_age_s / 3600:g} h")
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
      log.warning("could not remove stale temporary directory %s (%s)", path, why)
      continue
    log.info("removed stale temporary directory %s (%s)", path, why)
    removed.append(path)
  return removed
