"""Errors a user can fix, as opposed to bugs.

``UserError`` marks an error whose cause lies in what the user gave the run (its
config, its data, its workdir) and whose message alone says what to change: a bad
config field or value, missing or malformed data, a workdir in use by another run, a
stage fingerprint that does not match the config, a damaged checkpoint, a loss that
went non-finite. The command line (``fdjax.main``) prints such an error as one line on
stderr (plus an optional hint line) and exits with status ``EXIT_USER_ERROR`` (2); the
traceback is shown only at ``--verbosity=1`` or higher. Any other exception is a bug
and keeps its traceback.

Subclasses also derive from the builtin exception that the raising code used before
(``DataError`` from ``ValueError``, ``MissingDataError`` from ``FileNotFoundError``,
checkpoint errors from ``RuntimeError``), so ``except ValueError`` callers are unchanged.

An ``OSError`` of a full disk, a read-only file system or missing permissions, however
deep in a library's chain of exceptions, is treated the same way (``environment_error``).

``cli_errors(verbosity)`` is the context manager ``main`` wraps a run in;
``one_line(exc)`` is the text it prints.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
import traceback
from typing import Iterator, TextIO

EXIT_USER_ERROR = 2


class UserError(Exception):
  """An error the user can fix; its message names what is wrong and what to change.

  ``hint`` (optional keyword) is a second line with the usual fix, e.g. the flag to
  pass. ``str(err)`` is the message alone. Subclasses that also derive from a builtin
  exception list ``UserError`` first, so that this ``__init__`` takes the ``hint``.
  """

  hint: str | None = None

  def __init__(self, *args, hint: str | None = None):
    super().__init__(*args)
    self.hint = hint


class ConfigError(UserError, ValueError):
  """A config field is unknown, or its value is out of range or inconsistent."""


class DataError(UserError, ValueError):
  """The data source is malformed: unknown scheme, bad archive or image, empty split."""


class MissingDataError(DataError, FileNotFoundError):
  """The data source names a file, folder or split that does not exist.

  Also a ``FileNotFoundError`` (what the data layer raised before ``DataError``).
  """


class WorkdirLockedError(UserError, RuntimeError):
  """Another live process holds the workdir's lock (see ``fdjax.lock``)."""


def user_error_of(exc: BaseException) -> UserError | None:
  """``exc`` if it is a ``UserError``, else the first ``UserError`` it was explicitly
  raised from (``raise X from user_error``, the ``__cause__`` chain), else None. An
  exception that merely occurred while handling a ``UserError`` (``__context__``) is a
  bug and does not count."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    if isinstance(exc, UserError):
      return exc
    seen.add(id(exc))
    exc = exc.__cause__
  return None


# errno values of a cause in the machine that the user can fix: a full disk or quota, a
# read-only file system, missing permissions
ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def chained(exc: BaseException | None, context: bool = True) -> Iterator[BaseException]:
  """``exc`` and every exception it was raised from (``__cause__``), with ``context``
  also while handling (``__context__``), and that it groups (``exceptions``), each once."""
  pending, seen = [exc], set()
  while pending:
    e = pending.pop()
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    yield e
    pending += [e.__cause__, e.__context__ if context else None, *getattr(e, "exceptions", ())]


def environment_error(exc: BaseException) -> UserError | None:
  """A ``UserError`` for ``exc`` when it comes from a full disk, a read-only file system
  or missing permissions (``ENVIRONMENT_ERRNOS``) in what it was raised from: an
  ``OSError`` naming a file (the report writers', re-raised wrapped), or the error's
  text in a library's message
  (tensorstore, under orbax's checkpoint writes: ``ValueError('RESOURCE_EXHAUSTED: ...
  No space left on device ...')``); else None."""
  hint = ("free space (or quota), or make the folder writable, then run the same command "
          "again: a run resumes from what it saved")
  # Only what ``exc`` was raised from: a bug raised while handling such an error (its
  # __context__) stays a bug; and only an OSError about a file (one that names it).
  found = next((e for e in chained(exc, context=False) if isinstance(e, OSError)
                and e.errno in ENVIRONMENT_ERRNOS and e.filename), None)
  if found is not None:
    return UserError(f"{found.strerror or found}: {found.filename}", hint=hint)
  texts = [os.strerror(code) for code in ENVIRONMENT_ERRNOS]
  for e in chained(exc, context=False):
    # tensorstore's words for an OS error (not any message that says "Permission denied")
    if isinstance(e, OSError) or "os_error_code" not in str(e):
      continue
    text = next((t for t in texts if t in str(e)), None)
    if text:
      return UserError(f"{text} (a library's {type(e).__name__}; --verbosity=1 shows it whole)",
                       hint=hint)
  return None


def one_line(exc: BaseException) -> str:
  """``'error: <message>'`` with the message's line breaks folded into spaces, plus
  ``'\\nhint: <hint>'`` when the error has a hint. Describes ``user_error_of(exc)``
  (``exc`` itself when that is None)."""
  err = user_error_of(exc) or exc
  message = " ".join(str(err).split()) or type(err).__name__
  text = f"error: {message}"
  hint = getattr(err, "hint", None)
  if hint:
    text += "\nhint: " + " ".join(str(hint).split())
  return text


@contextlib.contextmanager
def cli_errors(verbosity: int = 0, stream: TextIO | None = None) -> Iterator[None]:
  """Turns a ``UserError`` raised inside the block, or an ``environment_error`` (a full
  disk, a read-only file system, missing permissions), into ``one_line(err)`` on
  ``stream`` (default stderr) and ``SystemExit(EXIT_USER_ERROR)``; with ``verbosity >=
  1`` the traceback is printed first. Other exceptions (bugs) pass through untouched."""
  try:
    yield
  except Exception as exc:  # noqa: BLE001  (re-raised unless it is a user error)
    err = user_error_of(exc) or environment_error(exc)
    if err is None:
      raise
    stream = stream or sys.stderr
    if verbosity >= 1:
      traceback.print_exception(type(exc), exc, exc.__traceback__, file=stream)
    stream.write(one_line(err) + "\n")
    stream.flush()
    raise SystemExit(EXIT_USER_ERROR) from None


HELP_FLAGS = ("--help", "--helpshort", "--helpfull", "--helpxml", "--?")   # any dashes


def parse_flags_or_exit(argv: list[str]) -> list[str]:
  """absl's flag parsing for ``app.run(main, flags_parser=parse_flags_or_exit)``: a flag
  value absl or a config file rejects (``--config.clean.epochs=2.5``, an unknown config
  variant) prints one ``error:`` line, the last line of what it raised, and exits with
  ``EXIT_USER_ERROR``, instead of absl's "FATAL Flags parsing error" with the config
  file's traceback and status 1. ``--verbosity=1`` keeps absl's own report. ``--help``
  (``--helpshort``, ``--helpfull``, ``-?``) prints absl's help and exits 0, not absl's 1
  (a script that asks for the help is not told that the command failed)."""
  from absl import flags

  missing = _missing_config_file(argv)
  if missing:
    sys.stderr.write(f"error: {missing}\n")
    raise SystemExit(EXIT_USER_ERROR)
  try:
    return flags.FLAGS(argv)
  except SystemExit as e:
    if e.code == 1 and any("--" + a.split("=", 1)[0].lstrip("-") in HELP_FLAGS
                           for a in argv[1:]):
      raise SystemExit(0) from None
    raise
  except flags.Error as e:
    if any(a.startswith(("--verbosity=1", "--verbosity=2", "-v=1")) for a in argv):
      raise
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    last = lines[-1] if lines else type(e).__name__
    if len(lines) > 1:   # a traceback: its last line is 'SomeError: message'
      last = last.split(": ", 1)[-1]
      flag = lines[0].split(": ", 1)[0] if lines[0].startswith("flag --") else ""
      last = f"{flag}: {last}" if flag else last
    last = re.sub(r"\('Non-boolean argument to boolean flag', (.*)\)$",
                  r"a boolean takes true or false, got \1", last)
    hint = ("the config file's get_config() (and fdjax/config.py, fdjax/config_restoration.py"
            " for the shared blocks) lists the fields and their types"
            if last.startswith("flag --config.") else "see --helpshort for the flags")
    sys.stderr.write(f"error: {last}\nhint: {hint}\n")
    raise SystemExit(EXIT_USER_ERROR) from None


def _missing_config_file(argv: list[str]) -> str | None:
  """The message for a ``--config`` file that does not exist (ml_collections defers that
  failure to the first read of the config, as two chained tracebacks), naming the
  nearest files of its folder; None when it exists or no ``--config`` is given."""
  import difflib
  import os

  from absl import flags

  if "config" not in flags.FLAGS:   # a command without --config (fdjax.apply): absl's error
    return None
  values = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
  values += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
  if not values:
    return None
  path = values[-1].split(":", 1)[0]
  if os.path.isfile(path):
    return None
  if os.path.isdir(path):
    return f"config file {path} is a folder; name a .py file with a get_config()"
  folder = os.path.dirname(path) or "."
  files = (sorted(f for f in os.listdir(folder) if f.endswith(".py"))
           if os.path.isdir(folder) else [])
  near = difflib.get_close_matches(os.path.basename(path), files, n=3)
  where = (f"; did you mean {' or '.join(os.path.join(os.path.dirname(path), f) for f in near)}?"
           if near else f" (the .py files in {folder}: {', '.join(files)})" if files else "")
  return f"config file {path} not found{where}"
