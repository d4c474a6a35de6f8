"""fdjax.data: sources (digits, folder trees and archives, TFDS) and host batching.

References are independent of the code under test: PIL decodes files directly,
tarfile reads archives, numpy recomputes orders and counts.
"""

import io
import os
import tarfile
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from PIL import Image

from fdjax import data
from fdjax.errors import DataError
from fdjax.data import ImageSet
from fdjax.data import _decode, archive, decoded_cache

CIFAR_ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")


# --------------------------------------------------------------------------- helpers

def write_image(path: Path, seed: int, size=(6, 5), mode="RGB") -> None:
  """A random PNG of ``size`` = (width, height)."""
  rng = np.random.default_rng(seed)
  shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


def make_tree(root: Path, layout=None, size=(6, 5)) -> Path:
  """``layout``: {split: {class: n_images}}; class folders deliberately unsorted."""
  layout = layout or {"train": {"zebra": 3, "ant": 2, "moth": 4}, "test": {"moth": 1, "ant": 2}}
  seed = 0
  for split, classes in layout.items():
    for name, n in classes.items():
      for i in range(n):
        write_image(root / split / name / f"img{i:02d}.png", seed, size)
        seed += 1
  return root


def reference(path) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"))


def reference_split(root: Path, split: str):
  """Images and labels read with PIL in sorted (class, file) order; labels by sorted train classes."""
  classes = sorted(os.listdir(root / "train"))
  images, labels = [], []
  for name in sorted(os.listdir(root / split)):
    for f in sorted(f for f in os.listdir(root / split / name) if f.endswith(".png")):
      images.append(reference(root / split / name / f))
      labels.append(classes.index(name))
  return np.stack(images), np.asarray(labels)


def make_tar(tree: Path, dest: Path, wrap: str | None) -> Path:
  with tarfile.open(dest, "w:gz") as tar:
    for child in sorted(tree.iterdir()):
      tar.add(child, arcname=f"{wrap}/{child.name}" if wrap else child.name)
  return dest


def no_decoding(*args, **kwargs):
  raise AssertionError("images were decoded again instead of read from the cache")


# --------------------------------------------------------------------------- digits

def test_digits_shapes_dtype_range_and_split():
  from sklearn.datasets import load_digits
  d = data.load("digits")
  assert d.name == "digits" and d.num_classes == 10 and d.class_names == tuple("0123456789")
  assert d.image_shape == (32, 32, 3) and d.validation is None
  assert len(d.train) + len(d.test) == 1797 and abs(len(d.test) - 0.2 * 1797) <= 10
  for s in (d.train, d.test):
    assert s.images.dtype == np.uint8 and s.labels.dtype == np.int32
    assert s.images.shape == (len(s), 32, 32, 3)
    assert set(np.unique(s.labels)) == set(range(10))
    np.testing.assert_array_equal(s.images[..., 0], s.images[..., 2])  # grey in RGB
  allimgs = np.concatenate([d.train.images, d.test.images])
  assert allimgs.min() == 0 and allimgs.max() == 255
  # Each image is a bilinear 4x upscale of an original digit (jax.image.resize as reference;
  # PIL's fixed-point arithmetic may differ by 1), matched by nearest neighbour.
  raw = np.rint(load_digits().images * (255 / 16))
  ref = np.asarray(jax.image.resize(raw, (len(raw), 32, 32), "bilinear"), np.float64).reshape(len(raw), -1)
  sample = allimgs[::18, ..., 0].reshape(-1, 32 * 32).astype(np.float64)
  sq_dist = (sample**2).sum(1)[:, None] + (ref**2).sum(1)[None] - 2 * sample @ ref.T
  assert np.abs(sample - ref[sq_dist.argmin(axis=1)]).max() <= 1.0


def test_digits_at_another_size_are_the_same_split_upscaled_2x():
  from sklearn.datasets import load_digits
  big, small = data.load("digits"), data.load("digits:16")
  assert small.name == "digits16" and small.image_shape == (16, 16, 3)
  np.testing.assert_array_equal(small.test.labels, big.test.labels)   # the same fixed split
  np.testing.assert_array_equal(small.train.labels, big.train.labels)
  # Every image is a bilinear 2x upscale of its scan (jax.image.resize as the reference;
  # PIL's fixed-point arithmetic may differ by 1), found by nearest neighbour.
  raw = np.rint(load_digits().images * (255 / 16))
  ref = np.asarray(jax.image.resize(raw, (len(raw), 16, 16), "bilinear"), np.float64).reshape(len(raw), -1)
  sample = small.test.images[::9, ..., 0].reshape(-1, 16 * 16).astype(np.float64)
  sq_dist = (sample**2).sum(1)[:, None] + (ref**2).sum(1)[None] - 2 * sample @ ref.T
  assert np.abs(sample - ref[sq_dist.argmin(axis=1)]).max() <= 1.0


@pytest.mark.parametrize("source", ["digits:7", "digits:x", "digits:", "digits:16.0"])
def test_a_bad_digits_size_is_a_data_error(source):
  with pytest.raises(DataError, match="the size must be an integer >= 8"):
    data.load(source)


def test_digits_split_is_fixed_and_seed_independent():
  a, b = data.load("digits", seed=0), data.load("digits", seed=123)
  np.testing.assert_array_equal(a.test.images, b.test.images)
  np.testing.assert_array_equal(a.train.labels, b.train.labels)


def test_a_held_out_fraction_that_takes_a_whole_class_is_refused():
  from fdjax.data.sampling import stratified_split

  labels = np.array([0] * 10 + [1])        # class 1 has one example: round(0.6) = 1 of 1
  with pytest.raises(DataError, match="takes all 1 example.*class 1"):
    stratified_split(labels, 0.6, seed=0)
  kept, held = stratified_split(labels, 0.2, seed=0)   # round(0.2) = 0 of class 1
  assert 10 in kept and len(held) == 2 and not set(kept) & set(held)


def test_validation_fraction_is_stratified_seeded_and_disjoint():
  full = data.load("digits")
  d = data.load("digits", validation_fraction=0.1, seed=3)
  counts_full, counts_val = np.bincount(full.train.labels), np.bincount(d.validation.labels)
  np.testing.assert_array_equal(counts_val, np.rint(0.1 * counts_full))
  np.testing.assert_array_equal(np.bincount(d.train.labels) + counts_val, counts_full)
  key = lambda imgs: {im.tobytes() for im in imgs}
  assert key(d.train.images) | key(d.validation.images) == key(full.train.images)
  assert not key(d.train.images) & key(d.validation.images)
  again = data.load("digits", validation_fraction=0.1, seed=3)
  other = data.load("digits", validation_fraction=0.1, seed=4)
  np.testing.assert_array_equal(again.validation.images, d.validation.images)
  assert key(other.validation.images) != key(d.validation.images)


def test_max_per_split_is_class_balanced_subset():
  full = data.load("digits")
  d = data.load("digits", validation_fraction=0.2, max_per_split=25)
  assert (len(d.train), len(d.validation), len(d.test)) == (25, 25, 25)
  for s in (d.train, d.validation, d.test):
    counts = np.bincount(s.labels, minlength=10)
    assert counts.max() - counts.min() <= 1
  full_test = {im.tobytes() for im in full.test.images}
  assert all(im.tobytes() in full_test for im in d.test.images)


# --------------------------------------------------------------------------- folder

def test_folder_tree_labels_follow_sorted_class_names(tmp_path):
  root = make_tree(tmp_path / "tree")
  write_image(root / "val" / "zebra" / "v.png", 99)
  (root / "train" / "ant" / "notes.txt").write_text("not an image")
  d = data.load(f"folder:{root}", cache_dir=str(tmp_path / "cache"))
  assert d.name == "tree" and d.class_names == ("ant", "moth", "zebra")
  assert d.image_shape == (5, 6, 3)
  for split, got in (("train", d.train), ("test", d.test), ("val", d.validation)):
    images, labels = reference_split(root, split)
    np.testing.assert_array_equal(got.images, images)
    np.testing.assert_array_equal(got.labels, labels)
  assert list(d.train.labels) == [0, 0, 1, 1, 1, 1, 2, 2, 2]


def test_folder_converts_grey_and_palette_to_rgb(tmp_path):
  root = make_tree(tmp_path / "tree", {"train": {"a": 1}, "test": {"a": 1}})
  write_image(root / "train" / "a" / "grey.png", 5, mode="L")
  Image.open(root / "test" / "a" / "img00.png").convert("P").save(root / "test" / "a" / "pal.png")
  d = data.load(f"folder:{root}", cache_dir=str(tmp_path / "cache"))
  grey = np.asarray(Image.open(root / "train" / "a" / "grey.png"))
  np.testing.assert_array_equal(d.train.images[0], np.repeat(grey[..., None], 3, axis=-1))
  np.testing.assert_array_equal(d.test.images[1], reference(root / "test" / "a" / "pal.png"))


def test_folder_scales_16_bit_grey_and_drops_arrays_decoded_by_older_versions(tmp_path):
  root = make_tree(tmp_path / "tree", {"train": {"a": 1}, "test": {"a": 1}})
  grey16 = np.random.default_rng(3).integers(0, 65536, (5, 6), dtype=np.uint16)
  Image.fromarray(grey16).save(root / "train" / "a" / "deep.png")
  assert Image.open(root / "train" / "a" / "deep.png").mode.startswith("I")
  d = data.load(f"folder:{root}", cache_dir=str(tmp_path / "cache"))
  # 0..65535 -> 0..255 by the closed form (PIL's convert('RGB') gives 255 nearly everywhere)
  expected = np.rint(grey16 / 257.0).astype(np.uint8)
  np.testing.assert_array_equal(d.train.images[0], np.repeat(expected[..., None], 3, axis=-1))
  [decoded] = list((tmp_path / "cache").glob(f"*/{decoded_cache.DECODED}"))
  older = decoded.parent / "decoded-v1"
  older.mkdir()
  (older / "images.npy").write_bytes(b"arrays of an older version")
  # A newer fdjax's, from another checkout sharing the cache root, is still read there.
  newer = decoded.parent / "decoded-v999"
  newer.mkdir()
  again = data.load(f"folder:{root}", cache_dir=str(tmp_path / "cache"))
  np.testing.assert_array_equal(again.train.images, d.train.images)
  assert not older.exists() and decoded.exists() and newer.exists()


@pytest.mark.parametrize("wrap", [None, "wrapper"])
def test_archive_loads_like_the_tree_and_is_extracted_once(tmp_path, monkeypatch, wrap):
  root = make_tree(tmp_path / "tree")
  tar = make_tar(root, tmp_path / "set.tar.gz", wrap)
  monkeypatch.setenv(archive.CACHE_ENV, str(tmp_path / "envcache"))
  d = data.load(f"folder:{tar}")
  assert d.name == "set" and d.class_names == ("ant", "moth", "zebra")
  for split, got in (("train", d.train), ("test", d.test)):
    images, labels = reference_split(root, split)
    np.testing.assert_array_equal(got.images, images)
    np.testing.assert_array_equal(got.labels, labels)
  entries = [p.name for p in (tmp_path / "envcache").iterdir()]
  assert len(entries) == 1 and entries[0].startswith("set-")  # nothing partial left behind
  # Second load: neither extracts nor decodes.
  monkeypatch.setattr(tarfile, "open", no_decoding)
  monkeypatch.setattr(_decode, "decode_parallel", no_decoding)
  again = data.load(f"folder:{tar}")
  np.testing.assert_array_equal(again.train.images, d.train.images)
  assert again.class_names == d.class_names


def test_an_archive_replaced_at_its_size_and_time_is_extracted_again(tmp_path):
  # rsync -a or cp -p keep the mtime; uncompressed images of one size keep the size.
  def archive_of(value: int, dest: Path) -> Path:
    for split in ("train", "test"):
      for name in ("a", "b"):
        path = tmp_path / "tree" / split / name / "x.bmp"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(path)
    with tarfile.open(dest, "w") as tar:
      for child in ("train", "test"):
        tar.add(tmp_path / "tree" / child, arcname=child)
    return dest

  tar = archive_of(10, tmp_path / "set.tar")
  assert data.load(f"folder:{tar}", cache_dir=str(tmp_path / "c")).train.images.max() == 10
  stat = tar.stat()
  os.replace(archive_of(200, tmp_path / "new.tar"), tar)
  os.utime(tar, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert (tar.stat().st_size, tar.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
  assert data.load(f"folder:{tar}", cache_dir=str(tmp_path / "c")).train.images.min() == 200


def test_entries_that_are_not_class_images_are_named_in_a_warning(tmp_path, caplog):
  root = make_tree(tmp_path / "tree")
  (root / "train" / "ant" / "notes.txt").write_text("x")
  (root / "train" / "ant" / "more").mkdir()
  Image.new("RGB", (8, 8)).save(root / "train" / "stray.png")
  (root / "Validation").mkdir()
  with caplog.at_level("WARNING"):
    data.load(f"folder:{root}", cache_dir=str(tmp_path / "c"))
  text = caplog.text
  assert "folders ['Validation'] are not splits" in text
  assert "3 entries are not images of a class folder" in text
  assert "ant/more/" in text and "ant/notes.txt" in text and "stray.png" in text


def test_cache_dir_argument_overrides_env(tmp_path, monkeypatch):
  tar = make_tar(make_tree(tmp_path / "tree"), tmp_path / "set.tgz", None)
  monkeypatch.setenv(archive.CACHE_ENV, str(tmp_path / "env"))
  data.load(f"folder:{tar}", cache_dir=str(tmp_path / "arg"))
  assert (tmp_path / "arg").is_dir() and not (tmp_path / "env").exists()


def test_crash_during_extraction_leaves_no_cache_entry(tmp_path, monkeypatch):
  tar = make_tar(make_tree(tmp_path / "tree"), tmp_path / "set.tar", None)
  cache = tmp_path / "cache"

  def crash(tar_file, dest):
    (dest / "train").mkdir(parents=True)
    raise KeyboardInterrupt("simulated crash mid-extraction")

  with monkeypatch.context() as m:
    m.setattr(archive, "_safe_extract", crash)
    with pytest.raises(KeyboardInterrupt):
      data.load(f"folder:{tar}", cache_dir=str(cache))
  assert list(cache.iterdir()) == []
  assert len(data.load(f"folder:{tar}", cache_dir=str(cache)).train) == 9


def test_plain_folder_decoded_cache_is_reused_and_invalidated(tmp_path, monkeypatch):
  root = make_tree(tmp_path / "tree")
  cache = str(tmp_path / "cache")
  first = data.load(f"folder:{root}", cache_dir=cache)
  with monkeypatch.context() as m:
    m.setattr(_decode, "decode_parallel", no_decoding)
    np.testing.assert_array_equal(data.load(f"folder:{root}", cache_dir=cache).train.images,
                                  first.train.images)
  write_image(root / "train" / "ant" / "new.png", 42)  # changes the listing: decode again
  assert len(data.load(f"folder:{root}", cache_dir=cache).train) == len(first.train) + 1
  # A file rewritten in place, same size, its modification time restored (cp -p, rsync -t
  # of an edited file): read anew, not the cached pixels.
  path = root / "train" / "ant" / "new.bmp"   # BMP: the same size for the same shape
  Image.fromarray(np.full((5, 6, 3), 10, np.uint8)).save(path)
  cached = data.load(f"folder:{root}", cache_dir=cache)
  index = cached.train.labels.tolist().index(0) + sorted(
      os.listdir(root / "train" / "ant")).index("new.bmp")
  assert cached.train.images[index].max() == 10
  before = os.stat(path)
  Image.fromarray(np.full((5, 6, 3), 200, np.uint8)).save(path)
  assert os.stat(path).st_size == before.st_size
  os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
  assert data.load(f"folder:{root}", cache_dir=cache).train.images[index].min() == 200


def test_max_per_split_decodes_only_the_subset(tmp_path, monkeypatch):
  root = make_tree(tmp_path / "tree")
  decoded = []
  real = _decode.decode_parallel
  monkeypatch.setattr(_decode, "decode_parallel",
                      lambda paths, *a, **k: decoded.extend(paths) or real(paths, *a, **k))
  d = data.load(f"folder:{root}", cache_dir=str(tmp_path / "cache"), max_per_split=3)
  assert len(decoded) == 6 and (len(d.train), len(d.test)) == (3, 3)
  assert sorted(d.train.labels) == [0, 1, 2]
  assert not (tmp_path / "cache").exists()  # a partial decode is not cached


def test_parallel_decode_matches_serial_and_reports_size_mismatch(tmp_path, monkeypatch):
  paths = []
  for i in range(8):
    write_image(tmp_path / f"{i}.png", i)
    paths.append(str(tmp_path / f"{i}.png"))
  monkeypatch.setattr(_decode, "MIN_PER_WORKER", 2)
  serial = _decode.decode_files(paths, paths[0], (6, 5))
  np.testing.assert_array_equal(_decode.decode_parallel(paths, paths[0], (6, 5), workers=3), serial)
  write_image(tmp_path / "7.png", 7, size=(4, 4))  # decoded by a worker process
  with pytest.raises(ValueError, match=r"0\.png is 6x5 .*/7\.png is 4x4"):
    _decode.decode_parallel(paths, paths[0], (6, 5), workers=3)


# --------------------------------------------------------------------------- errors

def test_unknown_scheme_lists_valid_sources():
  with pytest.raises(ValueError, match=r"'hdf5:x'.*digits.*folder:<path>.*tfds:<name>"):
    data.load("hdf5:x")


def test_missing_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
    data.load(f"folder:{tmp_path / 'nope'}")


def test_empty_class_folder(tmp_path):
  root = make_tree(tmp_path / "tree")
  (root / "train" / "empty").mkdir()
  with pytest.raises(ValueError, match=f"{root / 'train' / 'empty'} contains no images"):
    data.load(f"folder:{root}", cache_dir=str(tmp_path / "c"))


def test_images_of_different_sizes_name_both_files(tmp_path):
  root = make_tree(tmp_path / "tree")
  write_image(root / "test" / "ant" / "big.png", 1, size=(9, 7))
  with pytest.raises(ValueError, match=r"ant/img00\.png is 6x5 .*test/ant/big\.png is 9x7"):
    data.load(f"folder:{root}", cache_dir=str(tmp_path / "c"))


def test_missing_split_names_available_splits(tmp_path):
  root = make_tree(tmp_path / "tree", {"train": {"a": 1}, "validation": {"a": 1}})
  with pytest.raises(FileNotFoundError,
                     match=rf"{root} has no 'test' split .*\['train', 'validation'\]"):
    data.load(f"folder:{root}")


def test_split_without_class_folders(tmp_path):
  root = make_tree(tmp_path / "tree", {"train": {"a": 1}})
  (root / "test").mkdir()
  write_image(root / "test" / "loose.png", 0)
  with pytest.raises(ValueError, match=f"{root / 'test'} has no class folders"):
    data.load(f"folder:{root}")


def test_other_argument_errors(tmp_path):
  (tmp_path / "x.zip").write_bytes(b"PK")
  with pytest.raises(ValueError, match="x.zip is a file but not an archive"):
    data.load(f"folder:{tmp_path / 'x.zip'}")
  (tmp_path / "bad.tar.gz").write_bytes(b"not a tar")
  with pytest.raises(ValueError, match="cannot extract archive .*bad.tar.gz"):
    data.load(f"folder:{tmp_path / 'bad.tar.gz'}", cache_dir=str(tmp_path / "c"))
  write_image(tmp_path / "evil.png", 0)
  with tarfile.open(tmp_path / "evil.tar", "w") as tar:
    tar.add(tmp_path / "evil.png", arcname="../evil.png")
  with pytest.raises(ValueError, match="cannot extract archive .*evil.tar"):
    data.load(f"folder:{tmp_path / 'evil.tar'}", cache_dir=str(tmp_path / "c"))
  assert not (tmp_path / "c" / "evil.png").exists() and list((tmp_path / "c").iterdir()) == []
  with pytest.raises(ValueError, match="validation_fraction"):
    data.load("digits", validation_fraction=1.0)
  root = make_tree(tmp_path / "t", {"train": {"a": 1}, "test": {"extra": 1}})
  with pytest.raises(ValueError, match=r"\['extra'\] that the train split"):
    data.load(f"folder:{root}")


# --------------------------------------------------------------------------- TFDS

def _png(gray: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(gray).save(buf, format="PNG")
  return buf.getvalue()


def _gray(split: str, i: int) -> np.ndarray:
  return np.random.default_rng((len(split), i)).integers(0, 256, (4, 5), dtype=np.uint8)


class FdjaxTinyGray(tfds.core.GeneratorBasedBuilder):
  """Grey 4x5 images, classes b/a/c (ClassLabel order kept), train/test/validation."""

  VERSION = tfds.core.Version("1.0.0")
  SPLITS = {"train": 6, "test": 3, "validation": 2}

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(4, 5, 1)),
        "label": tfds.features.ClassLabel(names=["b", "a", "c"])}))

  def _split_generators(self, dl_manager):
    return {s: self._generate_examples(s) for s in self.SPLITS}

  def _generate_examples(self, split):
    for i in range(self.SPLITS[split]):  # PNG bytes: encoding arrays would need TensorFlow
      yield i, {"image": _png(_gray(split, i)), "label": i % 3}


class FdjaxTinyNoTest(FdjaxTinyGray):
  SPLITS = {"train": 3}


def test_tfds_builder_is_read_and_converted_to_rgb(tmp_path):
  FdjaxTinyGray(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  d = data.load("tfds:fdjax_tiny_gray", data_dir=str(tmp_path))
  assert d.name == "fdjax_tiny_gray" and d.class_names == ("b", "a", "c")
  assert d.image_shape == (4, 5, 3) and len(d.validation) == 2
  for split, got in (("train", d.train), ("test", d.test), ("validation", d.validation)):
    assert got.images.dtype == np.uint8 and got.labels.dtype == np.int32
    # TFDS shuffles examples at preparation: match each image to its generated index.
    expect = {_gray(split, i).tobytes(): i % 3 for i in range(FdjaxTinyGray.SPLITS[split])}
    assert sorted(expect.values()) == sorted(got.labels.tolist())
    for image, label in zip(got.images, got.labels):
      np.testing.assert_array_equal(image[..., 0], image[..., 1])
      assert expect[np.ascontiguousarray(image[..., 0]).tobytes()] == label


def test_tfds_missing_test_split_and_unprepared_data(tmp_path):
  FdjaxTinyNoTest(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  with pytest.raises(ValueError, match=r"no 'test' split; available splits: \['train'\]"):
    data.load("tfds:fdjax_tiny_no_test", data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match=rf"'cifar10' is not prepared in data_dir={tmp_path}.*folder:"):
    data.load("tfds:cifar10", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="unknown TFDS data set 'no_such_set_xyz'"):
    data.load("tfds:no_such_set_xyz", data_dir=str(tmp_path))


def test_tfds_conversion_to_rgb_uint8():
  from fdjax.data.tfds_source import to_rgb_uint8
  rgba = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 4), dtype=np.uint8)
  np.testing.assert_array_equal(to_rgb_uint8(rgba, "x"), rgba[..., :3])
  grey = rgba[..., 0]
  np.testing.assert_array_equal(to_rgb_uint8(grey, "x"), np.stack([grey] * 3, axis=-1))
  with pytest.raises(ValueError, match="set y: images must be uint8, got float32"):
    to_rgb_uint8(rgba.astype(np.float32), "set y")


def test_tfds_tfrecord_without_tensorflow_is_a_clear_error(monkeypatch):
  import builtins
  from types import SimpleNamespace
  from fdjax.data import tfds_source
  real_import = builtins.__import__

  def no_tensorflow(name, *args, **kwargs):
    if name == "tensorflow":
      raise ImportError("No module named 'tensorflow'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", no_tensorflow)
  builder = SimpleNamespace(info=SimpleNamespace(file_format=tfds.core.FileFormat.TFRECORD),
                            data_dir="/somewhere/cifar10/3.0.2")
  with pytest.raises(ImportError, match="tfrecord in /somewhere/cifar10/3.0.2.*pip install tensorflow"):
    tfds_source._read_split(builder, "train", "TFDS data set 'cifar10'")


# --------------------------------------------------------------------------- real CIFAR-10

@pytest.fixture
def cifar_archive():
  if not CIFAR_ARCHIVE.exists():
    pytest.skip(f"{CIFAR_ARCHIVE} not present")
  return CIFAR_ARCHIVE


def test_cifar_archive_subset(cifar_archive):
  # The cache root a user's load uses ($FDJAX_CACHE: the test session's own, see
  # conftest.py): the archive is extracted once a session. Decodes 100 images.
  d = data.load(f"folder:{cifar_archive}", max_per_split=50)
  assert d.name == "cifar10-jpeg" and d.class_names == CIFAR_CLASSES
  assert d.image_shape == (32, 32, 3) and (len(d.train), len(d.test)) == (50, 50)
  np.testing.assert_array_equal(np.bincount(d.test.labels), [5] * 10)


@pytest.mark.long
@pytest.mark.slow
def test_cifar_archive_full_decode_and_cache(cifar_archive, tmp_path, monkeypatch):
  # A fresh cache: extraction, the parallel decode of all 60k JPEGs and the .npy cache.
  cache = str(tmp_path / "cache")
  d = data.load(f"folder:{cifar_archive}", cache_dir=cache)
  assert (len(d.train), len(d.test), d.num_classes, d.image_shape) == (50000, 10000, 10, (32, 32, 3))
  np.testing.assert_array_equal(np.bincount(d.train.labels), [5000] * 10)
  np.testing.assert_array_equal(np.bincount(d.test.labels), [1000] * 10)
  with tarfile.open(cifar_archive) as tar:  # reference pixels straight from the archive
    for split, index, member in (("train", 0, "train/airplane/0000.jpg"),
                                 ("test", -1, "test/truck/0999.jpg")):
      ref = reference(io.BytesIO(tar.extractfile(member).read()))
      np.testing.assert_array_equal(getattr(d, split).images[index], ref)
  monkeypatch.setattr(_decode, "decode_parallel", no_decoding)
  start = time.perf_counter()
  again = data.load(f"folder:{cifar_archive}", cache_dir=cache)
  assert time.perf_counter() - start < 10
  np.testing.assert_array_equal(again.test.images, d.test.images)


# --------------------------------------------------------------------------- batching

def indexed_split(n: int, hw=(2, 3)) -> ImageSet:
  """Image i is filled with i % 256 and labelled i, so batches reveal their indices."""
  idx = np.arange(n)
  images = np.broadcast_to((idx % 256).astype(np.uint8)[:, None, None, None], (n, *hw, 3)).copy()
  return ImageSet(images, idx.astype(np.int32))


@pytest.mark.parametrize("n,b,drop,expect", [(10, 3, True, 3), (10, 3, False, 4), (9, 3, True, 3),
                                             (9, 3, False, 3), (2, 3, True, 0), (0, 3, False, 0)])
def test_num_batches(n, b, drop, expect):
  assert data.num_batches(n, b, drop) == expect


def test_epoch_order():
  np.testing.assert_array_equal(data.epoch_order(7, seed=1, epoch=2, shuffle=False), np.arange(7))
  order = data.epoch_order(50, seed=1, epoch=2, shuffle=True)
  np.testing.assert_array_equal(order, np.random.default_rng((1, 2)).permutation(50))


def test_train_batches_cover_epoch_once_and_resume_exactly():
  split = indexed_split(23)
  batches = list(data.train_batches(split, 5, seed=7, epoch=0))
  assert len(batches) == 4
  for b in batches:
    assert b["image"].dtype == np.uint8 and b["image"].shape == (5, 2, 3, 3)
    assert b["label"].dtype == np.int32 and b["label"].shape == (5,)
    np.testing.assert_array_equal(np.asarray(b["image"])[:, 0, 0, 0], np.asarray(b["label"]) % 256)
  seen = np.concatenate([np.asarray(b["label"]) for b in batches])
  order = np.random.default_rng((7, 0)).permutation(23)
  np.testing.assert_array_equal(seen, order[:20])  # the last 3 of the order are dropped
  assert len(set(seen.tolist())) == 20
  other = np.concatenate([np.asarray(b["label"]) for b in data.train_batches(split, 5, seed=7, epoch=1)])
  assert not np.array_equal(other, seen)
  resumed = list(data.train_batches(split, 5, seed=7, epoch=0, start_batch=2))
  assert len(resumed) == 2
  for a, b in zip(resumed, batches[2:]):
    np.testing.assert_array_equal(a["label"], b["label"])
  assert list(data.train_batches(split, 5, seed=7, epoch=0, start_batch=4)) == []


def test_train_batches_errors_are_eager():
  with pytest.raises(ValueError, match="batch_size 30 is larger than the split"):
    data.train_batches(indexed_split(23), 30, seed=0, epoch=0)
  with pytest.raises(ValueError, match="start_batch 5 is outside"):
    data.train_batches(indexed_split(23), 5, seed=0, epoch=0, start_batch=5)


def test_eval_batches_pad_and_mask():
  split = indexed_split(23)
  batches = list(data.eval_batches(split, 8))
  assert [b["image"].shape[0] for b in batches] == [8, 8, 8]
  mask = np.concatenate([np.asarray(b["mask"]) for b in batches])
  labels = np.concatenate([np.asarray(b["label"]) for b in batches])
  assert mask.dtype == bool and mask.sum() == 23 and not mask[23:].any()
  np.testing.assert_array_equal(labels[mask], np.arange(23))
  assert not np.asarray(batches[-1]["image"])[7:].any()


def test_batches_are_placed_with_sharding():
  mesh = Mesh(np.asarray(jax.devices()[:1]), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  split = indexed_split(16)
  for batch in (next(data.train_batches(split, 4, seed=0, epoch=0, sharding=sharding)),
                next(data.eval_batches(split, 4, sharding=sharding))):
    for v in batch.values():
      assert isinstance(v, jax.Array) and v.sharding.is_equivalent_to(sharding, v.ndim)
  plain = next(data.eval_batches(split, 4))
  assert plain["image"].devices() == {jax.devices()[0]}


# --------------------------------------------------------------------------- split fields

def paired_split(n: int, hw=(2, 3)) -> ImageSet:
  """Random images, target = 255 - image, no label: a paired (restoration-like) split."""
  images = np.random.default_rng(n).integers(0, 256, (n, *hw, 3), dtype=np.uint8)
  return ImageSet.from_fields({"image": images, "target": 255 - images})


def test_paired_split_train_batches_keep_rows_aligned():
  split = paired_split(23)
  images = split.images
  batches = list(data.train_batches(split, 5, seed=7, epoch=0))
  order = np.random.default_rng((7, 0)).permutation(23)
  assert len(batches) == 4
  for i, b in enumerate(batches):
    assert set(b) == {"image", "target"}
    assert b["target"].dtype == np.uint8 and b["target"].shape == (5, 2, 3, 3)
    np.testing.assert_array_equal(b["image"], images[order[5 * i:5 * (i + 1)]])
    np.testing.assert_array_equal(b["target"], 255 - np.asarray(b["image"]))


def test_paired_split_eval_batches_pad_every_field_and_mask():
  split = paired_split(23)
  batches = list(data.eval_batches(split, 8))
  assert [set(b) for b in batches] == [{"image", "target", "mask"}] * 3
  cat = {k: np.concatenate([np.asarray(b[k]) for b in batches]) for k in batches[0]}
  assert all(v.shape[0] == 24 for v in cat.values())
  np.testing.assert_array_equal(cat["mask"], np.arange(24) < 23)
  np.testing.assert_array_equal(cat["image"][:23], split.images)
  np.testing.assert_array_equal(cat["target"][:23], 255 - split.images)
  assert cat["target"].dtype == np.uint8 and not cat["image"][23:].any()
  assert not cat["target"][23:].any()  # padded with zeros, not 255 - 0


def test_take_and_repeat_match_numpy():
  for split in (indexed_split(11), paired_split(11)):
    idx = np.array([4, 0, 10, 4])
    got = data.take(split, idx)
    assert list(got.fields) == list(split.fields) and len(got) == 4
    for k, v in split.fields.items():
      np.testing.assert_array_equal(got.fields[k], v[idx])
      assert got.fields[k].dtype == v.dtype
    keep = np.arange(11) % 3 == 0
    for k, v in data.take(split, keep).fields.items():
      np.testing.assert_array_equal(v, split.fields[k][keep])
    assert len(data.take(split, [])) == 0
    tiled = data.repeat(split, 3)
    assert len(tiled) == 33
    for k, v in split.fields.items():
      np.testing.assert_array_equal(tiled.fields[k], np.concatenate([v] * 3))
  for bad in (0, -1, 1.5, True):
    with pytest.raises(ValueError, match="times must be an int >= 1"):
      data.repeat(indexed_split(3), bad)
  with pytest.raises(ValueError, match="indices must be 1-D"):
    data.take(indexed_split(3), [[0]])


def test_fields_labels_and_immutability():
  import copy
  split = indexed_split(4)
  assert list(split.fields) == ["image", "label"]
  assert split.images is split.fields["image"] and split.labels is split.fields["label"]
  paired = paired_split(4)
  assert "label" not in paired.fields and not hasattr(paired, "labels")
  with pytest.raises(AttributeError, match=r"no 'label' field \(fields: \['image', 'target'\]\)"):
    paired.labels
  with pytest.raises(AttributeError):
    split.images = paired.images
  with pytest.raises(TypeError):
    split.fields["label"] = split.labels
  again = copy.deepcopy(paired)
  assert list(again.fields) == ["image", "target"]
  np.testing.assert_array_equal(again.fields["target"], paired.fields["target"])


def test_bad_fields_are_clear_value_errors():
  images = np.zeros((4, 2, 3, 3), np.uint8)
  with pytest.raises(ValueError, match=r"ImageSet.images must be a uint8 numpy array "
                                       r"\[N, H, W, 3\], got ndarray float32 \(4, 2, 3, 3\)"):
    ImageSet(images.astype(np.float32), np.zeros(4, np.int32))
  with pytest.raises(ValueError, match=r"ImageSet.labels must be an int32 numpy array \[4\], "
                                       r"got ndarray int64 \(4,\)"):
    ImageSet(images, np.zeros(4, np.int64))
  with pytest.raises(ValueError, match=r"ImageSet.labels must be an int32 numpy array \[4\]"):
    ImageSet.from_fields({"image": images, "label": np.zeros(3, np.int32)})
  with pytest.raises(ValueError, match=r"'target' must be a uint8 numpy array shaped like "
                                       r"'image' \[4, 2, 3, 3\], got ndarray uint8 \(4, 3, 2, 3\)"):
    ImageSet.from_fields({"image": images, "target": np.zeros((4, 3, 2, 3), np.uint8)})
  with pytest.raises(ValueError, match=r"'target' must be a uint8.*got ndarray float32"):
    ImageSet.from_fields({"image": images, "target": images.astype(np.float32)})
  with pytest.raises(ValueError, match=r"needs an 'image' field .*\['label', 'target'\]"):
    ImageSet.from_fields({"label": np.zeros(4, np.int32), "target": images})
  with pytest.raises(ValueError, match=r"'depth' must be a numpy array with leading length 4"):
    ImageSet.from_fields({"image": images, "depth": np.zeros((5, 2, 3), np.float32)})
  with pytest.raises(ValueError, match="'mask' is reserved"):
    ImageSet.from_fields({"image": images, "mask": np.ones(4, bool)})


# --------------------------------------------------------------------------- module structure

DATA_DIR = Path(data.__file__).parent


def data_import_graph() -> dict[str, set[str]]:
  """fdjax.data module -> the fdjax.data modules it imports (any import statement,
  including ones inside functions), read from the source with ``ast``."""
  import ast
  modules = {("fdjax.data" if p.stem == "__init__" else f"fdjax.data.{p.stem}"): p
             for p in DATA_DIR.glob("*.py")}
  graph = {}
  for name, path in modules.items():
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative to the package fdjax.data
          base = ".".join(["fdjax.data"] + [base] * bool(base))
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                   for a in node.names]
      else:
        continue
      for t in targets:  # fdjax.data.splits.ImageSet -> fdjax.data.splits
        while t not in modules and "." in t:
          t = t.rpartition(".")[0]
        if t in modules:
          edges.add(t)
    graph[name] = edges - {name}
  return graph


def test_data_modules_import_no_cycle():
  graph = data_import_graph()
  assert graph["fdjax.data.splits"] == set()
  for source_module in ("digits", "folder", "tfds_source"):
    assert "fdjax.data.splits" in graph[f"fdjax.data.{source_module}"]
    assert not graph[f"fdjax.data.{source_module}"] & {"fdjax.data", "fdjax.data.sources"}
  assert {"fdjax.data.digits", "fdjax.data.folder", "fdjax.data.tfds_source"} <= \
      graph["fdjax.data.sources"]
  for start in graph:
    seen, todo = set(), list(graph[start])
    while todo:
      m = todo.pop()
      if m not in seen:
        seen.add(m)
        todo.extend(graph[m])
    assert start not in seen, f"{start} imports a module that imports it back"


def test_splits_module_imports_no_other_fdjax_module():
  import subprocess
  import sys
  # Loaded from its file, so fdjax/data/__init__.py (which imports everything) is not run.
  code = f"""
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location('splits_alone', {str(DATA_DIR / 'splits.py')!r})
mod = sys.modules['splits_alone'] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
split = mod.ImageSet.from_fields({{'image': np.zeros((2, 1, 1, 3), np.uint8)}})
assert len(mod.take(split, [1])) == 1
print(sorted(m for m in sys.modules if m.split('.')[0] == 'fdjax'))
"""
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
