"""The extraction and decoded-array caches (fdjax.data.archive, fdjax.data.decoded_cache): one
entry per archive whatever its permissions or folder, the caches of an archive's or a
folder's earlier versions pruned once no run has touched them for a day, an entry whose
extracted tree a user deleted, and paired errors that name the archive."""

import os
import shutil
import tarfile

import ml_collections
import numpy as np
import pytest
from PIL import Image

from fdjax import data
from fdjax.data import archive, paired, restoration_sets, stale
from fdjax.data.decoded_cache import DECODED
from fdjax.data.paired import load_paired
from fdjax.errors import DataError

from test_data_recovery import age, make_tar, write_tree


def _entries(cache):
  return sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))


def test_chmod_and_a_move_keep_the_entry(tmp_path):
  tar = make_tar(write_tree(tmp_path / "tree"), tmp_path / "set.tar.gz")
  cache = tmp_path / "cache"
  first = data.load(f"folder:{tar}", cache_dir=str(cache))
  os.chmod(tar, 0o600)
  (tmp_path / "elsewhere").mkdir()
  moved = tar.rename(tmp_path / "elsewhere" / "set.tar.gz")
  again = data.load(f"folder:{moved}", cache_dir=str(cache))
  assert _entries(cache) == [archive.entry_dir(moved, cache).name]
  np.testing.assert_array_equal(first.train.images, again.train.images)


def test_a_replaced_archives_earlier_entry_goes_once_untouched_for_a_day(tmp_path):
  cache = tmp_path / "cache"
  tar = make_tar(write_tree(tmp_path / "a"), tmp_path / "set.tar.gz")
  data.load(f"folder:{tar}", cache_dir=str(cache))
  first = archive.entry_dir(tar, cache)
  assert (first / archive.ORIGIN).read_text() == str(tar.resolve())
  # Another archive of the same name elsewhere, and an entry without an origin (an
  # older fdjax's): neither is this archive's to prune.
  (tmp_path / "b").mkdir()
  other = make_tar(write_tree(tmp_path / "b" / "tree"), tmp_path / "b" / "set.tar.gz")
  data.load(f"folder:{other}", cache_dir=str(cache))
  legacy = cache / "set-000000000000"
  (legacy / "tree").mkdir(parents=True)
  for entry in cache.iterdir():
    age(entry, stale.FOREIGN_AGE_S + 60)

  def replace(n_per_class):      # the same path, new contents (a new file: a new inode)
    tar.unlink()
    make_tar(write_tree(tmp_path / f"v{n_per_class}", n_per_class=n_per_class), tar)
    loaded = data.load(f"folder:{tar}", cache_dir=str(cache))
    assert len(loaded.train.labels) == 2 * n_per_class
    return archive.entry_dir(tar, cache)

  second = replace(4)
  assert not first.exists() and second.is_dir()
  age(second, 60)                # touched a minute ago: a run may still read it
  third = replace(5)
  assert second.is_dir() and third.is_dir()
  assert sorted(_entries(cache)) == sorted(
      e.name for e in (second, third, archive.entry_dir(other, cache), legacy))


def test_a_folders_earlier_listing_cache_is_pruned_after_a_day(tmp_path):
  tree, cache = write_tree(tmp_path / "imgs"), tmp_path / "cache"
  data.load(f"folder:{tree}", cache_dir=str(cache))
  (first,) = _entries(cache)
  assert (cache / first / archive.ORIGIN).read_text() == str(tree.resolve())
  age(cache / first, stale.FOREIGN_AGE_S + 60)
  Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tree / "train" / "ant" / "new.png")
  loaded = data.load(f"folder:{tree}", cache_dir=str(cache))
  assert len(loaded.train.labels) == 7
  assert len(_entries(cache)) == 1 and _entries(cache)[0] != first


def test_an_entry_whose_tree_was_deleted_loads_from_its_arrays_or_extracts_again(tmp_path):
  tar = make_tar(write_tree(tmp_path / "tree"), tmp_path / "set.tar.gz")
  cache = tmp_path / "cache"
  first = data.load(f"folder:{tar}", cache_dir=str(cache))
  entry = archive.entry_dir(tar, cache)
  shutil.rmtree(entry / "tree")            # a user freeing space keeps decoded-v<n>/
  again = data.load(f"folder:{tar}", cache_dir=str(cache))
  np.testing.assert_array_equal(first.test.images, again.test.images)
  assert not (entry / "tree").exists()     # the arrays were enough
  shutil.rmtree(entry / DECODED)
  (entry / "keep.txt").write_text("x")     # whatever else the entry holds stays
  third = data.load(f"folder:{tar}", cache_dir=str(cache))
  np.testing.assert_array_equal(first.train.images, third.train.images)
  assert (entry / "tree").is_dir() and (entry / "keep.txt").exists()


def _paired_archive(tmp_path, mismatch=False):
  root = tmp_path / ("bad" if mismatch else "good") / "set"
  for sub in ("rainy", "norain"):
    (root / sub).mkdir(parents=True)
  for i in range(3):
    Image.fromarray(np.full((8, 6, 3), i, np.uint8)).save(root / "norain" / f"{i}.png")
    shape = (8, 7, 3) if mismatch and i == 1 else (8, 6, 3)
    Image.fromarray(np.full(shape, i + 9, np.uint8)).save(root / "rainy" / f"{i}.png")
  dest = tmp_path / ("bad.tar" if mismatch else "set.tar")
  with tarfile.open(dest, "w") as tar:
    tar.add(root, arcname="set")
  return dest


def test_paired_errors_name_the_archive_and_a_deleted_tree_is_extracted_again(tmp_path):
  bad = _paired_archive(tmp_path, mismatch=True)
  with pytest.raises(DataError, match=rf"a pair must share one size \(extracted from {bad}\)"):
    load_paired(bad, input_dir="rainy", target_dir="norain", cache_dir=str(tmp_path / "c"))
  good = _paired_archive(tmp_path)
  pairs = load_paired(good, input_dir="rainy", target_dir="norain", cache_dir=str(tmp_path / "c"))
  shutil.rmtree(archive.entry_dir(good, tmp_path / "c") / "tree")
  again = load_paired(good, input_dir="rainy", target_dir="norain",
                      cache_dir=str(tmp_path / "c"))
  assert again.names == pairs.names == ("0", "1", "2")


def test_a_restoration_sets_max_per_split_decodes_only_those_images(tmp_path, monkeypatch):
  for name, n in (("train", 6), ("test", 5)):
    for i in range(n):
      (tmp_path / name).mkdir(exist_ok=True)
      Image.fromarray(np.full((40, 40, 3), i, np.uint8)).save(tmp_path / name / f"{i}.png")
  read = []
  real = paired._read
  monkeypatch.setattr(paired, "_read", lambda path: read.append(path) or real(path))
  config = ml_collections.ConfigDict(dict(
      source="sets", root=str(tmp_path), train="train", test="test", pair_dirs="rainy,norain",
      validation_fraction=0.0, max_per_split=2, max_train_images=0, tile=16, cache_dir="",
      test_pairs={}, train_pairs={}, crop_multiple=0))
  ds = restoration_sets.load(config, patch=8, seed=0)
  assert len(read) == 4 and sorted(p.stem for p in read) == ["0", "0", "1", "1"]
  assert ds.test_for("denoise").names == ("0", "1")


def test_a_moved_archives_entry_follows_it_and_is_not_pruned_for_the_new_one(tmp_path):
  cache = tmp_path / "cache"
  tar = make_tar(write_tree(tmp_path / "a"), tmp_path / "set.tar.gz")
  data.load(f"folder:{tar}", cache_dir=str(cache))
  entry = archive.entry_dir(tar, cache)
  age(entry, stale.FOREIGN_AGE_S + 60)
  (tmp_path / "old").mkdir()
  moved = tar.rename(tmp_path / "old" / "set.tar.gz")
  data.load(f"folder:{moved}", cache_dir=str(cache))      # the same entry, now in use
  assert archive.entry_dir(moved, cache) == entry
  assert (entry / archive.ORIGIN).read_text() == str(moved.resolve())
  make_tar(write_tree(tmp_path / "b", n_per_class=4), tar)   # a new archive at the old path
  data.load(f"folder:{tar}", cache_dir=str(cache))
  assert entry.is_dir() and archive.entry_dir(tar, cache).is_dir()
  assert len(data.load(f"folder:{moved}", cache_dir=str(cache)).train.labels) == 6


def test_an_archive_rewritten_in_place_gets_a_new_entry(tmp_path):
  # Same path, same inode, same size, new contents (rewritten in place, e.g. by rsync
  # --inplace): the modification time alone tells it apart. A copy keeping the size and
  # mtime is a new inode; a new size alone differs too.
  path = tmp_path / "set.tar"
  path.write_bytes(b"a" * 100)
  os.utime(path, ns=(10**18, 10**18))
  first = archive.entry_dir(path, tmp_path)
  inode = path.stat().st_ino
  with open(path, "r+b") as f:
    f.write(b"b" * 100)
  os.utime(path, ns=(10**18 + 10**9, 10**18 + 10**9))
  assert path.stat().st_ino == inode and path.stat().st_size == 100
  rewritten = archive.entry_dir(path, tmp_path)
  assert rewritten != first
  copy = tmp_path / "copy" / "set.tar"
  copy.parent.mkdir()
  copy.write_bytes(path.read_bytes())
  os.utime(copy, ns=(10**18 + 10**9, 10**18 + 10**9))
  assert archive.entry_dir(copy, tmp_path) != archive.entry_dir(path, tmp_path)
  with open(path, "ab") as f:
    f.write(b"c")
  os.utime(path, ns=(10**18 + 10**9, 10**18 + 10**9))   # the rewritten one's mtime kept
  assert archive.entry_dir(path, tmp_path) != rewritten
