"""Files a later run or a person reads (evaluation caches, the best epoch, stage
fingerprints, population reports, results tables and figures), written so that a reader
never sees half a file.

``replaced(path)`` is ``open(path, "w")`` that writes ``<path>.<pid>.tmp``, flushes it to
the disk (``fsync``) and renames it over ``path`` (``os.replace``, atomic on POSIX; the
process id keeps two writers' temporary files apart) when the block ends without an
error; on an error the temporary file is removed and ``path`` keeps its previous
contents. A run killed or stopped (``fdjax.train.stop``), or a disk that fills, in the
middle of a write leaves the previous file or none, never a truncated one that the next
run would fail to parse (or a person would take for the results); a hard kill leaves
its temporary file too, which the next run on the workdir deletes
(``remove_stale_temporaries``). ``write_json(path, record)`` is ``json.dump`` through it.

Reading back: ``read_json(path, hint)`` raises ``DamagedFileError`` (one line naming the
file, and ``hint``: what to delete) for a file that cannot be parsed (a power loss
before the write reached the disk, a hand edit); ``read_cache(path)`` treats such a
file, or a missing one, as no cache (None, with a warning line for a damaged one).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import IO, Any, Iterator

from absl import logging

from fdjax.errors import UserError


class DamagedFileError(UserError, ValueError):
  """A JSON file a run wrote cannot be read back."""


@contextlib.contextmanager
def replaced(path: str, mode: str = "w", **open_options) -> Iterator[IO]:
  """The file to write ``path``'s new contents to (module docstring); creates ``path``'s
  folder if needed. ``mode``: 'w' or 'wb'."""
  if mode not in ("w", "wb"):
    raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp"
  try:
    with open(tmp, mode, **open_options) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


_TEMPORARY = re.compile(r"\.\d+\.tmp$")   # replaced()'s <path>.<pid>.tmp


def remove_stale_temporaries(root: str, older_than: float) -> list[str]:
  """Deletes the temporary files ``replaced`` left under ``root`` when a process was
  killed in a write (``kill -9``, a lost machine: nothing ran its cleanup), those last
  modified before ``older_than`` (a ``time.time()``); returns their paths. Only for a
  folder no live process writes to (a run's workdir while it holds its lock)."""
  removed = []
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      if _TEMPORARY.search(name):
        with contextlib.suppress(OSError):
          if os.path.getmtime(path) < older_than:
            os.remove(path)
            removed.append(path)
  return removed


def write_json(path: str, record: Any, **dump_options) -> None:
  """``json.dump(record, f, **dump_options)`` to ``path``, atomically (``replaced``)."""
  with replaced(path) as f:
    json.dump(record, f, **dump_options)


def read_json(path: str, hint: str) -> Any:
  """``path``'s JSON record; ``DamagedFileError`` naming it (and ``hint``: what to
  delete) when it cannot be parsed. A file that cannot be opened or read (too many open
  files, no permission) is not damaged: a ``UserError`` naming the cause, and nothing to
  delete."""
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as e:
    raise DamagedFileError(f"cannot read {path}: {e}", hint=hint) from None
  except OSError as e:
    raise UserError(f"cannot read {path}: {e.strerror or e}; the file was left as it is",
                    hint="fix the cause (e.g. `ulimit -n`, the file's permissions) and run "
                         "the same command again") from e


def read_cache(path: str) -> Any | None:
  """``path``'s JSON record, or None when it does not exist or cannot be parsed (then
  with a warning line: the caller computes it again)."""
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    logging.warning("damaged cache file %s (%s): computed again", path, e)
    return None
