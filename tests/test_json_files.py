"""``fdjax.json_files``: a write that fails half-way (here: a value json cannot encode,
met after part of the record has been written; a disk that fills) leaves the previous
file whole and no temporary file, as a run killed or stopped during the write would; the
results tables and figures are written the same way."""

import errno
import json
import os

import pytest

from fdjax.errors import UserError
from fdjax.json_files import replaced, write_json


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path):
  path = tmp_path / "eval" / "row-abc.json"
  write_json(str(path), {"psnr": [30.5, 31.0]})          # creates the folder
  assert json.loads(path.read_text()) == {"psnr": [30.5, 31.0]}
  with pytest.raises(TypeError):
    write_json(str(path), {"psnr": [1.0] * 10_000 + [object()]})
  # the previous record, whole (writing through a plain open(path, 'w') fails here)
  assert json.loads(path.read_text()) == {"psnr": [30.5, 31.0]}
  assert os.listdir(path.parent) == ["row-abc.json"]   # no temporary file left behind
  write_json(str(path), {"psnr": [29.0]}, indent=1)
  assert path.read_text() == '{\n "psnr": [\n  29.0\n ]\n}'


def test_a_full_disk_leaves_the_previous_table_and_figure(tmp_path, monkeypatch):
  """results.md and the figures were written in place: a disk that filled left a 0-byte
  results.json beside a plausible results.md, and a rerun destroyed the good ones."""
  from fdjax.eval import plots

  table, figure = tmp_path / "results.md", tmp_path / "accuracy_jpeg.png"
  with replaced(str(table)) as f:
    f.write("| row | 90.0 |\n")
  fig = plots.pyplot().figure()
  plots.save_figure(fig, str(figure), dpi=20)
  png = figure.read_bytes()
  assert png.startswith(b"\x89PNG")

  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(os, "fsync", full)
  with pytest.raises(OSError, match="No space left"):
    with replaced(str(table)) as f:
      f.write("| row | 10.0 |\n")
  with pytest.raises(OSError, match="No space left"):
    plots.save_figure(plots.pyplot().figure(), str(figure), dpi=20)
  assert table.read_text() == "| row | 90.0 |\n" and figure.read_bytes() == png
  assert sorted(os.listdir(tmp_path)) == ["accuracy_jpeg.png", "results.md"]


def test_a_damaged_record_is_one_error_naming_it_and_a_damaged_cache_is_no_cache(tmp_path):
  """A zero-length file (a power loss before the write reached the disk) was a bare
  JSONDecodeError traceback naming no file."""
  from fdjax.json_files import DamagedFileError, read_cache, read_json
  from fdjax.study import fingerprint

  stage = tmp_path / "clean"
  stage.mkdir()
  (stage / fingerprint.FILE).write_text("")
  with pytest.raises(DamagedFileError, match=f"cannot read {stage / fingerprint.FILE}") as info:
    fingerprint.check_or_record(str(stage), "clean", {"stage": "clean"})
  assert f"delete the stage folder {stage}" in info.value.hint
  write_json(str(tmp_path / "ok.json"), {"a": 1})
  assert read_json(str(tmp_path / "ok.json"), hint="") == {"a": 1}
  (tmp_path / "folder.json").mkdir()   # unreadable, not damaged: nothing to delete
  with pytest.raises(UserError, match="the file was left as it is") as info:
    read_json(str(tmp_path / "folder.json"), hint="delete it")
  assert not isinstance(info.value, DamagedFileError) and "delete" not in info.value.hint
  cache = tmp_path / "eval-abc.json"
  assert read_cache(str(cache)) is None          # missing: computed
  cache.write_text('{"accuracy": 0.9')           # cut short: computed again, not a traceback
  assert read_cache(str(cache)) is None
  write_json(str(cache), {"accuracy": 0.9})
  assert read_cache(str(cache)) == {"accuracy": 0.9}


def test_a_write_killed_hard_leaves_a_temporary_file_that_the_next_run_deletes(tmp_path):
  import signal
  import subprocess
  import sys
  import time

  from fdjax.json_files import remove_stale_temporaries

  target = tmp_path / "seed_0" / "results.md"
  writer = subprocess.Popen(
      [sys.executable, "-c",
       "import sys, time\n"
       "from fdjax.json_files import replaced\n"
       f"with replaced({str(target)!r}) as f:\n"
       "  f.write('half'); f.flush(); print('writing', flush=True); time.sleep(60)\n"],
      stdout=subprocess.PIPE, text=True)
  assert writer.stdout.readline().strip() == "writing"
  writer.send_signal(signal.SIGKILL)
  writer.wait()
  left = tmp_path / "seed_0" / f"results.md.{writer.pid}.tmp"
  assert left.exists() and not target.exists()   # no cleanup ran
  started = time.time() + 1   # a run that starts after it
  live = tmp_path / "results.csv.123.tmp"   # a file as new as the run: left alone
  live.write_text("x")
  os.utime(live, (started + 5, started + 5))
  (tmp_path / "notes.tmp").write_text("a user's")   # not replaced()'s name: left alone
  assert remove_stale_temporaries(str(tmp_path), started) == [str(left)]
  assert not left.exists() and live.exists() and (tmp_path / "notes.tmp").exists()
