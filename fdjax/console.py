"""What the console shows: fdjax's own INFO lines by default, everything with ``--verbosity>=1``.

Libraries log a lot at INFO (orbax: ~17 lines per checkpoint save; jax: backend
probing). ``configure_logging`` installs ONE filter on absl's handler that drops
INFO-and-below records that do not come from fdjax's own source files; warnings
and errors of every library always pass. By default the lines carry the time alone
(``08:41:38 [clean] step 25/32 ...``; absl's prefix, ``I1207 08:41:38.646699
140095950789504 progress.py:98]``, was half of every line), a library's record also its
level and logger (``08:41:38 warning (orbax.checkpoint): ...``), fdjax's warnings
``warning:``; ``--verbosity>=1`` keeps absl's full prefix.

Why the earlier filter in ``main.py`` never dropped anything: it compared a Python
record level (``record.levelno``, INFO = 20) with ``absl.logging.WARNING``, which is
absl's *verbosity* constant (-1), not Python's level (30); ``20 >= -1`` holds for
every record, so every record passed.
"""

from __future__ import annotations

import logging as pylogging
import os
import stat
import sys

from absl import logging

_FDJAX_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def is_fdjax_record(record: pylogging.LogRecord) -> bool:
  """True for a record logged by fdjax code (absl's logger reports the caller's file)."""
  return (record.name == "fdjax" or record.name.startswith("fdjax.")
          or os.path.abspath(record.pathname).startswith(_FDJAX_DIR))


def _only_fdjax_info(record: pylogging.LogRecord) -> bool:
  return record.levelno >= pylogging.WARNING or is_fdjax_record(record)


class ConsoleFormatter(pylogging.Formatter):
  """``HH:MM:SS message``; ``HH:MM:SS warning: message`` for fdjax's warnings and errors;
  ``HH:MM:SS <level> (<logger>): message`` for another library's record (module
  docstring). A record's exception, if any, follows as usual."""

  def __init__(self):
    super().__init__(datefmt="%H:%M:%S")

  def format(self, record: pylogging.LogRecord) -> str:
    level = record.levelname.lower()
    if is_fdjax_record(record):
      tag = "" if record.levelno <= pylogging.INFO else f"{level}: "
    else:
      tag = f"{level} ({record.name}): "
    line = f"{self.formatTime(record, self.datefmt)} {tag}{record.getMessage()}"
    if record.exc_info:
      line += "\n" + self.formatException(record.exc_info)
    return line


def configure_logging(verbosity: int = 0) -> None:
  """Sets absl's verbosity and the console filter; calling it again replaces both.

  ``verbosity`` is on absl's scale (``--verbosity``/``-v``: -1 warning, 0 info, 1 debug):

  * ``0`` (what ``fdjax.main`` uses unless ``--verbosity`` is given): INFO; fdjax's INFO
    lines are shown, other libraries' INFO/DEBUG lines dropped, their warnings kept;
    lines as ``ConsoleFormatter`` writes them.
  * ``< 0``: that absl verbosity (fdjax's INFO lines hidden too), same filter.
  * ``>= 1``: that absl verbosity and no filter: every library's INFO lines (orbax's
    checkpoint chatter included) and DEBUG lines are shown, with absl's full prefix.
  """
  handler = logging.get_absl_handler()
  handler.removeFilter(_only_fdjax_info)
  if verbosity >= 1:
    handler.setFormatter(logging.PythonFormatter())   # absl's own
    logging.set_verbosity(verbosity)
    return
  handler.setFormatter(ConsoleFormatter())
  logging.set_verbosity(min(verbosity, logging.INFO))
  handler.addFilter(_only_fdjax_info)


def start_cli(argv, flags, quoted: str = "--config.data.root='my data/restoration'") -> int:
  """The common start of fdjax's absl commands: refuses stray arguments (one error line
  and a hint, exit status 2, as every error a user can fix; ``quoted``: the command's
  own example of a quoted value), configures the console (``configure_logging``) and
  returns the verbosity: 0 unless ``--verbosity`` was given (absl's own default would
  show every library's INFO lines)."""
  if len(argv) > 1:
    from fdjax.errors import EXIT_USER_ERROR, UserError, one_line

    write_stderr(one_line(UserError(
        f"unexpected arguments {argv[1:]}: every value is a --flag=value",
        hint=f"quote a value that holds spaces, e.g. {quoted}; --help lists the flags"))
        + "\n")
    raise SystemExit(EXIT_USER_ERROR)
  verbosity = flags.FLAGS.verbosity if flags.FLAGS["verbosity"].present else 0
  configure_logging(verbosity)
  return verbosity


def write_stderr(text: str) -> None:
  """Writes ``text`` to stderr at once. A console that has gone away (its pipe's reader
  stopped, e.g. by the same Ctrl-C that fdjax is handling) is ignored: the caller goes on."""
  try:
    sys.stderr.write(text)
    sys.stderr.flush()
  except OSError:
    pass


def silence_console(fds=(1, 2)) -> None:
  """Points each of ``fds`` (stdout, stderr) that is not a regular file at ``/dev/null``:
  the console has gone away (a hang-up: the terminal, or the ``tee`` that read the pipe,
  is gone; or a write there just failed), so later writes, and Python's last flush of
  stdout at exit (which would otherwise end the process with status 120), succeed. A
  console redirected to a file keeps its file."""
  devnull = None
  for fd in fds:
    try:
      if stat.S_ISREG(os.fstat(fd).st_mode):
        continue
      if devnull is None:
        devnull = os.open(os.devnull, os.O_WRONLY)
      os.dup2(devnull, fd)
    except OSError:
      continue
  if devnull is not None:
    os.close(devnull)


def first_paragraph(doc: str) -> str:
  """A module docstring's first paragraph on one line: a command's ``--help``
  description (its first line alone can stop mid-sentence)."""
  return " ".join(doc.strip().split("\n\n")[0].split())
