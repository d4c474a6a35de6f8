"""fdjax.errors: the user-error classes, their one-line rendering and exit status, and the
data layer raising them (still as the ValueError / FileNotFoundError it raised before)."""

import io

import numpy as np
import pytest
from PIL import Image

from fdjax import data
from fdjax.errors import (EXIT_USER_ERROR, ConfigError, DataError, MissingDataError, UserError,
                          WorkdirLockedError, cli_errors, one_line, user_error_of)


def test_user_error_classes_keep_builtin_bases():
  assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)
  assert issubclass(MissingDataError, FileNotFoundError) and issubclass(MissingDataError, DataError)
  assert issubclass(WorkdirLockedError, RuntimeError)
  for cls in (ConfigError, DataError, MissingDataError, WorkdirLockedError):
    assert issubclass(cls, UserError)
    err = cls("what is wrong", hint="what to do")
    assert str(err) == "what is wrong" and err.hint == "what to do"
  assert UserError("no hint").hint is None


def test_one_line_folds_message_and_adds_hint():
  err = ConfigError("bad value\n  for clean.epochs", hint="use\n>= 1")
  assert one_line(err) == "error: bad value for clean.epochs\nhint: use >= 1"
  assert one_line(DataError("x")) == "error: x"


def test_user_error_found_through_explicit_cause_only():
  user = DataError("missing folder")
  try:
    try:
      raise user
    except DataError as e:
      raise RuntimeError("wrapper") from e
  except RuntimeError as wrapped:
    assert user_error_of(wrapped) is user
    assert one_line(wrapped) == "error: missing folder"
  try:
    try:
      raise user
    except DataError:
      raise KeyError("a bug while handling it")  # implicit context: still a bug
  except KeyError as bug:
    assert user_error_of(bug) is None


@pytest.mark.parametrize("verbosity", [0, 1])
def test_cli_errors_prints_one_line_and_exits_2(verbosity):
  stream = io.StringIO()
  with pytest.raises(SystemExit) as info:
    with cli_errors(verbosity, stream):
      raise ConfigError("unknown config field 'no_such'", hint="check the spelling")
  assert info.value.code == EXIT_USER_ERROR == 2
  text = stream.getvalue()
  tail = "error: unknown config field 'no_such'\nhint: check the spelling\n"
  if verbosity == 0:
    assert text == tail
  else:
    assert text.startswith("Traceback (most recent call last):") and text.endswith(tail)


def test_a_full_disk_or_read_only_folder_deep_in_a_library_is_one_line():
  """orbax and the report writers re-raise OSErrors wrapped: a full disk during a
  checkpoint printed some 450 lines of tracebacks and exited 1."""
  import errno
  import os

  for code in (errno.ENOSPC, errno.EROFS, errno.EACCES):
    stream = io.StringIO()
    with pytest.raises(SystemExit) as info:
      with cli_errors(0, stream):
        try:
          raise OSError(code, os.strerror(code), "/runs/q/seed_0/clean/checkpoints/8")
        except OSError as e:
          raise ValueError("saving step 8 failed") from e
    assert info.value.code == EXIT_USER_ERROR
    lines = stream.getvalue().splitlines()
    assert lines[0] == f"error: {os.strerror(code)}: /runs/q/seed_0/clean/checkpoints/8"
    assert len(lines) == 2 and lines[1].startswith("hint: free space")
  # tensorstore's own error under an orbax checkpoint write: the errno as text only
  stream = io.StringIO()
  with pytest.raises(SystemExit):
    with cli_errors(0, stream):
      raise ValueError('RESOURCE_EXHAUSTED: Error writing "opt_state/0" in OCDBT database: '
                       "No space left on device [os_error_code='28']")
  assert stream.getvalue().startswith("error: No space left on device (a library's ValueError")
  # Not about a file: an EPERM with no file name, a message that merely says so.
  for bug in (PermissionError(errno.EPERM, os.strerror(errno.EPERM)),
              RuntimeError("coordinator: Permission denied")):
    with pytest.raises(type(bug)):
      with cli_errors(0, io.StringIO()):
        raise bug
  # A bug raised while handling such an error (its __context__, not its cause) is a bug.
  with pytest.raises(KeyError):
    with cli_errors(0, io.StringIO()):
      try:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/root/cache.json")
      except PermissionError:
        {}["fallback"]
  with pytest.raises(OSError):   # any other OSError is not the user's to fix: a traceback
    with cli_errors(0, io.StringIO()):
      raise OSError(errno.EBADF, os.strerror(errno.EBADF))


def test_cli_errors_lets_bugs_through():
  stream = io.StringIO()
  with pytest.raises(ZeroDivisionError):
    with cli_errors(0, stream):
      1 / 0
  assert stream.getvalue() == ""


# --------------------------------------------------------------------------- data layer

def test_missing_folder_is_missing_data_error(tmp_path):
  with pytest.raises(MissingDataError, match="does not exist"):
    data.load(f"folder:{tmp_path / 'nowhere'}")


@pytest.mark.parametrize("source", ["cifar", "folder:", "tfds:", "digits:x", 7])
def test_unknown_or_incomplete_source_is_data_error(source):
  with pytest.raises(DataError):
    data.load(source)


def test_empty_validation_split_is_data_error():
  with pytest.raises(DataError, match="leaves an empty split"):
    data.load("digits", validation_fraction=1e-6)


def test_out_of_range_load_arguments_are_config_errors():
  with pytest.raises(ConfigError, match="validation_fraction"):
    data.load("digits", validation_fraction=1.0)
  with pytest.raises(ConfigError, match="max_per_split"):
    data.load("digits", max_per_split=-1)


def _png(path, size=(4, 4)):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(path)


def test_malformed_folder_trees_are_data_errors(tmp_path):
  root = tmp_path / "tree"
  _png(root / "train" / "a" / "0.png")
  with pytest.raises(MissingDataError, match="no 'test' split folder"):
    data.load(f"folder:{root}", cache_dir=str(tmp_path / "cache"))
  (root / "test" / "a").mkdir(parents=True)
  with pytest.raises(DataError, match="contains no images"):
    data.load(f"folder:{root}", cache_dir=str(tmp_path / "cache"))
  _png(root / "test" / "a" / "0.png", size=(5, 4))
  with pytest.raises(DataError, match="different sizes"):
    data.load(f"folder:{root}", cache_dir=str(tmp_path / "cache"))
  (root / "test" / "a" / "0.png").write_bytes(b"not a png")
  with pytest.raises(DataError, match="cannot decode image"):
    data.load(f"folder:{root}", cache_dir=str(tmp_path / "cache"))


def test_bad_archive_is_data_error(tmp_path):
  bad = tmp_path / "set.tar.gz"
  bad.write_bytes(b"\x1f\x8b garbage")
  with pytest.raises(DataError, match="cannot extract archive"):
    data.load(f"folder:{bad}", cache_dir=str(tmp_path / "cache"))
  not_archive = tmp_path / "set.zip"
  not_archive.write_bytes(b"PK")
  with pytest.raises(DataError, match="not an archive"):
    data.load(f"folder:{not_archive}", cache_dir=str(tmp_path / "cache"))
