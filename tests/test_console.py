"""Console logging: fdjax's own INFO lines by default, orbax's only with --verbosity=1."""

import logging as pylogging
import os
import re

import pytest
from absl import logging

import fdjax
from fdjax.console import configure_logging

FDJAX_FILE = os.path.join(os.path.dirname(fdjax.__file__), "train", "loop.py")
ORBAX_FILE = os.path.join("/site-packages", "orbax", "checkpoint", "checkpoint_manager.py")


class _Capture(pylogging.Handler):
  def __init__(self):
    super().__init__()
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture
def console(monkeypatch):
  """Routes what absl's handler lets through (after its filters) into a list."""
  handler = logging.get_absl_handler()
  capture = _Capture()
  monkeypatch.setattr(handler, "_current_handler", capture)
  root = pylogging.getLogger()
  added = handler not in root.handlers
  if added:
    root.addHandler(handler)
  verbosity, root_level, filters = logging.get_verbosity(), root.level, list(handler.filters)
  handler.filters[:] = []  # whatever earlier tests (or CLIs run in-process) installed
  yield capture.messages
  handler.filters[:] = filters
  logging.set_verbosity(verbosity)
  root.setLevel(root_level)
  if added:
    root.removeHandler(handler)


def _absl_info_from(filename: str, message: str) -> None:
  """absl.logging.info called from code whose file is ``filename`` (absl reports the caller)."""
  exec(compile(f"logging.info({message!r})", filename, "exec"), {"logging": logging})


def _log_everything() -> None:
  _absl_info_from(FDJAX_FILE, "fdjax info")
  _absl_info_from(ORBAX_FILE, "orbax absl info")
  pylogging.getLogger("orbax.checkpoint.checkpoint_manager").info("orbax logger info")
  pylogging.getLogger("orbax.checkpoint").warning("orbax warning")


def test_default_verbosity_shows_fdjax_info_and_drops_orbax_info(console):
  configure_logging(0)
  _log_everything()
  assert console == ["fdjax info", "orbax warning"]


def test_verbosity_one_shows_orbax_info_again(console):
  configure_logging(1)
  _log_everything()
  assert console == ["fdjax info", "orbax absl info", "orbax logger info", "orbax warning"]
  configure_logging(0)   # back to the default: the filter is installed once, not twice
  _log_everything()
  assert console[4:] == ["fdjax info", "orbax warning"]
  assert len(logging.get_absl_handler().filters) == 1


def test_default_lines_carry_the_time_and_a_library_s_level_and_logger(console, monkeypatch):
  handler = logging.get_absl_handler()
  formatted = []
  monkeypatch.setattr(handler._current_handler, "emit",
                      lambda record: formatted.append(handler.format(record)))
  configure_logging(0)
  _log_everything()
  exec(compile("logging.warning('fdjax warning')", FDJAX_FILE, "exec"), {"logging": logging})
  clock = r"\d\d:\d\d:\d\d "
  assert [re.sub(clock, "", line, count=1) for line in formatted] == [
      "fdjax info", "warning (orbax.checkpoint): orbax warning", "warning: fdjax warning"]
  assert all(re.match(clock, line) for line in formatted)
  configure_logging(1)   # absl's own prefix: level, date, time, thread, file:line
  formatted.clear()
  _absl_info_from(FDJAX_FILE, "fdjax info")
  assert re.match(r"I\d{4} [\d:.]+ +\d+ loop\.py:1\] fdjax info$", formatted[0]), formatted
  configure_logging(0)


def test_negative_verbosity_hides_info_keeps_warnings(console):
  configure_logging(-1)
  _log_everything()
  assert console == ["orbax warning"]


def test_help_descriptions_are_the_docstrings_whole_first_paragraph(capsys):
  """A docstring's first line alone can stop mid-sentence (one --help ended 'on the')."""
  import pytest

  from fdjax.bench import restoration_degradations
  from fdjax.console import first_paragraph

  assert first_paragraph("""One sentence
  that wraps.

  The rest.""") == "One sentence that wraps."
  with pytest.raises(SystemExit):
    restoration_degradations._parse(["--help"])
  text = " ".join(capsys.readouterr().out.split())
  assert ("Speed of fdjax's restoration degradations, and of their per-image convolution, "
          "on the current JAX backend.") in text


def test_a_stray_argument_is_one_error_line_and_exit_2(capsys):
  """``--method=Vanilla FT`` unquoted leaves 'FT' behind: absl's UsageError printed the
  whole --help (54 lines for fdjax.apply) and exited 1."""
  from absl import flags

  from fdjax.console import start_cli
  from fdjax.errors import EXIT_USER_ERROR

  with pytest.raises(SystemExit) as info:
    start_cli(["fdjax.apply", "FT"], flags, quoted="--method='Vanilla FT'")
  assert info.value.code == EXIT_USER_ERROR
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 2 and lines[0].startswith("error: unexpected arguments ['FT']")
  assert lines[1].startswith("hint: quote a value that holds spaces, e.g. --method='Vanilla FT'")
  with pytest.raises(SystemExit):   # fdjax.main's example is its own (--method is apply's)
    start_cli(["fdjax.main", "x"], flags)
  assert "e.g. --config.data.root='my data/restoration';" in capsys.readouterr().err


def test_help_exits_0_not_absls_1():
  """absl exits 1 after --help: a script asking for the help was told the command failed."""
  import os
  import subprocess
  import sys
  from pathlib import Path

  repo = Path(__file__).resolve().parents[1]
  for command, flag in (("fdjax.apply", "--help"), ("fdjax.data.pair_check", "--helpfull"),
                        ("fdjax.apply", "-help")):   # absl's single-dash spelling too
    result = subprocess.run([sys.executable, "-m", command, flag], cwd=repo,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "--" in result.stdout, (command, result.stderr[-2000:])
  failed = subprocess.run([sys.executable, "-m", "fdjax.apply", "--nope"], cwd=repo,
                          capture_output=True, text=True, timeout=120)
  assert failed.returncode == 2   # a bad flag still fails
