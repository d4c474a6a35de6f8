"""Recovery after a killed run: temporary directories of dead processes are deleted at
the next load (archive extraction, decoded-array cache, decoder scratch), those of live
processes are kept, and a damaged decoded cache is reported by file and rebuilt."""

import logging
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdjax import data
from fdjax.data import _decode, archive, decoded_cache, stale

REPO = Path(__file__).resolve().parents[1]


def write_tree(root: Path, n_per_class=3, size=(6, 5)) -> Path:
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    for name in ("ant", "bee"):
      for i in range(n_per_class):
        path = root / split / name / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
  return root


def make_tar(tree: Path, dest: Path) -> Path:
  with tarfile.open(dest, "w:gz") as tar:
    for child in sorted(tree.iterdir()):
      tar.add(child, arcname=child.name)
  return dest


def dead_pid() -> int:
  """The PID of a process that has exited (and been reaped)."""
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def owned_dir(parent: Path, prefix: str, pid: int, suffix: str = "", host=None) -> Path:
  """A directory named as ``stale.make_temp_dir`` would for process ``pid``, with a file."""
  path = parent / f"{prefix}@{host or stale.hostname()}@{pid}@abc_12{suffix}"
  path.mkdir(parents=True)
  (path / "junk.bin").write_bytes(b"\0" * 1000)
  return path


def age(path: Path, seconds: float) -> None:
  t = time.time() - seconds
  os.utime(path, (t, t))


# --------------------------------------------------------------------------- stale

def test_owner_round_trip_and_liveness(tmp_path):
  made = stale.make_temp_dir(tmp_path, ".set-1a2b@x-vm", ".partial")
  assert stale.owner(made.name, ".partial") == (stale.hostname(), os.getpid())
  assert stale.owner(".set-1a2b-Xy9_k.partial", ".partial") is None  # no owner recorded
  assert stale.pid_alive(os.getpid()) and not stale.pid_alive(dead_pid())
  assert not stale.is_stale(made, ".partial")


def test_another_user_s_live_process_keeps_its_folder(tmp_path, monkeypatch):
  # os.kill(pid, 0) on another user's process raises PermissionError: it is alive, and
  # the folder it is writing must not be removed.
  def kill(pid, signal):
    raise PermissionError(1, "Operation not permitted")

  monkeypatch.setattr(stale.os, "kill", kill)
  assert stale.pid_alive(12345)


def test_remove_stale_keeps_live_recent_and_foreign_dirs(tmp_path):
  gone = owned_dir(tmp_path, ".e-", dead_pid(), ".partial")
  mine = owned_dir(tmp_path, ".e-", os.getpid(), ".partial")
  other_host = owned_dir(tmp_path, ".f-", dead_pid(), ".partial", host="elsewhere")
  old_other_host = owned_dir(tmp_path, ".g-", 1, ".partial", host="elsewhere")
  legacy_recent = tmp_path / ".e-k3j_x9.partial"
  legacy_old = tmp_path / ".e-p0q_z1.partial"
  legacy_recent.mkdir()
  legacy_old.mkdir()
  age(legacy_old, 2 * 86400)
  age(old_other_host, 2 * 86400)
  unrelated = owned_dir(tmp_path, "keep-", dead_pid())  # no match for prefix '.' + suffix
  removed = stale.remove_stale(tmp_path, ".", ".partial")
  assert sorted(removed) == sorted([gone, legacy_old, old_other_host])
  for kept in (mine, other_host, legacy_recent, unrelated):
    assert kept.is_dir()


# --------------------------------------------------------------------------- archive

def test_extraction_killed_by_sigkill_is_cleaned_at_next_load(tmp_path):
  tar = make_tar(write_tree(tmp_path / "tree"), tmp_path / "set.tar.gz")
  cache = tmp_path / "cache"
  # A run that dies (kill -9) in the middle of extracting: its .partial folder stays.
  code = textwrap.dedent(f"""
      import sys, time
      from pathlib import Path
      from fdjax.data import archive
      def slow(tar, dest):
        (dest / "train").mkdir(parents=True)
        print("extracting", flush=True)
        time.sleep(120)
      archive._safe_extract = slow
      archive.extract(Path({str(tar)!r}), Path({str(cache)!r}))
  """)
  proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
  try:
    assert proc.stdout.readline().strip() == "extracting"
    partial = [p for p in cache.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1 and f"@{proc.pid}@" in partial[0].name
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert partial[0].is_dir()  # left behind by the killed run
  d = data.load(f"folder:{tar}", cache_dir=str(cache))
  assert len(d.train) == 6
  assert not partial[0].exists()
  assert [p.name for p in cache.iterdir()] == [archive.entry_dir(tar, cache).name]


def test_decoded_cache_partial_of_dead_run_is_removed(tmp_path):
  tar = make_tar(write_tree(tmp_path / "tree"), tmp_path / "set.tar.gz")
  cache = tmp_path / "cache"
  data.load(f"folder:{tar}", cache_dir=str(cache))
  entry = archive.entry_dir(tar, cache)
  gone = owned_dir(entry, ".decoded", dead_pid(), decoded_cache.PARTIAL)
  live = owned_dir(entry, ".decoded", os.getpid(), decoded_cache.PARTIAL)
  data.load(f"folder:{tar}", cache_dir=str(cache))
  assert not gone.exists() and live.is_dir()


# --------------------------------------------------------------------------- decoder scratch

def test_decode_scratch_of_dead_run_is_removed_and_own_scratch_deleted(tmp_path, monkeypatch):
  scratch = tmp_path / "tmp"
  scratch.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(scratch))
  gone = owned_dir(scratch, _decode.SCRATCH_PREFIX, dead_pid())
  live = owned_dir(scratch, _decode.SCRATCH_PREFIX, os.getpid())
  paths = []
  for i in range(6):
    path = tmp_path / f"{i}.png"
    Image.fromarray(np.full((5, 6, 3), i, np.uint8)).save(path)
    paths.append(str(path))
  monkeypatch.setattr(_decode, "MIN_PER_WORKER", 2)
  out = _decode.decode_parallel(paths, paths[0], (6, 5), workers=2)
  np.testing.assert_array_equal(out[:, 0, 0, 0], np.arange(6))
  assert not gone.exists() and live.is_dir()
  assert sorted(os.listdir(scratch)) == [live.name]  # this run's scratch is gone too


# --------------------------------------------------------------------------- damaged cache

def _truncate(path: Path) -> None:
  size = path.stat().st_size
  with open(path, "r+b") as f:
    f.truncate(size // 2)


@pytest.mark.parametrize("kind", ["folder", "archive"])
@pytest.mark.parametrize("damaged", ["train_images.npy", "test_labels.npy", "meta.json"])
def test_truncated_decoded_cache_is_named_and_rebuilt(tmp_path, monkeypatch, caplog, kind,
                                                      damaged):
  tree = write_tree(tmp_path / "tree")
  src = tree if kind == "folder" else make_tar(tree, tmp_path / "set.tar.gz")
  cache = tmp_path / "cache"
  first = data.load(f"folder:{src}", cache_dir=str(cache))
  [decoded] = list(cache.glob(f"*/{decoded_cache.DECODED}"))
  _truncate(decoded / damaged)
  with caplog.at_level(logging.WARNING):
    again = data.load(f"folder:{src}", cache_dir=str(cache))
  assert re.search(f"{decoded / damaged}.* is damaged", caplog.text)
  np.testing.assert_array_equal(again.train.images, first.train.images)
  np.testing.assert_array_equal(again.test.labels, first.test.labels)
  # Rebuilt: the next load reads the cache without decoding and without a warning.
  monkeypatch.setattr(_decode, "decode_parallel", lambda *a, **k: pytest.fail("decoded again"))
  third = data.load(f"folder:{src}", cache_dir=str(cache))
  np.testing.assert_array_equal(third.train.images, first.train.images)
  assert not [p.name for p in decoded.parent.iterdir() if p.name.endswith(decoded_cache.PARTIAL)]


def test_cache_with_inconsistent_shapes_is_rebuilt(tmp_path, caplog):
  tree = write_tree(tmp_path / "tree")
  cache = tmp_path / "cache"
  first = data.load(f"folder:{tree}", cache_dir=str(cache))
  [decoded] = list(cache.glob(f"*/{decoded_cache.DECODED}"))
  np.save(decoded / "train_labels.npy", np.zeros(2, np.int32))  # 6 images, 2 labels
  with caplog.at_level(logging.WARNING):
    again = data.load(f"folder:{tree}", cache_dir=str(cache))
  assert re.search("train_labels.npy.*expected int32 \\[6\\]", caplog.text)
  np.testing.assert_array_equal(again.train.labels, first.train.labels)
