"""Restoration folders: paired input/target folders and clean-only folders, as folders
and archives; whole-image splits by size and training tiles; errors a user can act on;
the real Rain100L archive when the shared data is present."""

import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fdjax.data.paired import load_paired
from fdjax.errors import DataError, MissingDataError


def shared_data() -> Path | None:
  """``<shared>/data`` next to this checkout or next to the main checkout of a worktree."""
  checkout = Path(__file__).resolve().parents[1]
  candidates = [checkout.parent / "shared" / "data"]
  try:
    common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
                            cwd=checkout, capture_output=True, text=True, timeout=10).stdout
    if common.strip():
      candidates.append(Path(common.strip()).parent.parent / "shared" / "data")
  except (OSError, subprocess.SubprocessError):
    pass
  return next((c for c in candidates if c.is_dir()), None)


def write_png(path: Path, array: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def make_pairs(root: Path, sizes=((6, 8), (8, 6), (6, 8)), input_ext=".png"):
  """``root/wrap/{rainy,norain}/pNN``; input = 255 - target. Returns targets by name."""
  rng = np.random.default_rng(0)
  targets = {}
  for i, (h, w) in enumerate(sizes):
    target = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    write_png(root / "wrap" / "norain" / f"p{i:02d}.png", target)
    write_png(root / "wrap" / "rainy" / f"p{i:02d}{input_ext}", 255 - target)
    targets[f"p{i:02d}"] = target
  return targets


def test_paired_folder_loads_every_pair_whole_and_aligned(tmp_path):
  targets = make_pairs(tmp_path / "set")
  d = load_paired(tmp_path / "set", input_dir="rainy", target_dir="norain")
  assert d.paired and d.name == "set" and d.names == ("p00", "p01", "p02")
  for name, target, degraded in zip(d.names, d.targets, d.inputs):
    assert target.dtype == np.uint8
    np.testing.assert_array_equal(target, targets[name])
    np.testing.assert_array_equal(degraded, 255 - targets[name])
  assert d.sizes() == [(6, 8), (8, 6), (6, 8)]
  (idx_a, a), (idx_b, b) = d.by_size()
  np.testing.assert_array_equal(idx_a, [0, 2])
  np.testing.assert_array_equal(idx_b, [1])
  assert set(a.fields) == {"image", "target"} and a.fields["image"].shape == (2, 6, 8, 3)
  np.testing.assert_array_equal(a.fields["target"][1], targets["p02"])
  np.testing.assert_array_equal(b.fields["image"][0], 255 - targets["p01"])
  with pytest.raises(DataError, match="2 sizes.*by_size"):
    d.to_imageset()
  assert len(d.take([0, 2]).to_imageset()) == 2


def test_tiles_cover_every_pixel_and_keep_pairs_aligned(tmp_path):
  make_pairs(tmp_path / "set")
  d = load_paired(tmp_path / "set", input_dir="rainy", target_dir="norain")
  tiles = d.tiles(4, stride=3)
  # per axis: 6 -> offsets 0, 2; 8 -> 0, 3, 4: 2*3 + 3*2 + 2*3 tiles
  assert tiles.fields["target"].shape == (18, 4, 4, 3)
  np.testing.assert_array_equal(tiles.fields["image"], 255 - tiles.fields["target"])
  np.testing.assert_array_equal(tiles.fields["target"][0], d.targets[0][:4, :4])
  np.testing.assert_array_equal(tiles.fields["target"][5], d.targets[0][2:6, 4:8])
  with pytest.raises(DataError, match="'p00' is 8x6.*smaller than the 7x7"):
    d.tiles(7)


def test_archive_and_input_extension_differing_from_target(tmp_path):
  targets = make_pairs(tmp_path / "tree", sizes=((5, 5),), input_ext=".bmp")
  tar_path = tmp_path / "mine.tar"
  with tarfile.open(tar_path, "w") as tar:
    tar.add(tmp_path / "tree" / "wrap", arcname="mine")
  d = load_paired(tar_path, input_dir="rainy", target_dir="norain", cache_dir=tmp_path / "c")
  assert d.name == "mine" and d.names == ("p00",)
  np.testing.assert_array_equal(d.inputs[0], 255 - targets["p00"])


def test_clean_only_folders_have_an_image_field_and_no_target(tmp_path):
  rng = np.random.default_rng(1)
  clean = [rng.integers(0, 256, (4, 6, 3), dtype=np.uint8) for _ in range(3)]
  for i, image in enumerate(clean):
    write_png(tmp_path / "photos" / f"{i}.png", image)
  (tmp_path / "photos" / "notes.txt").write_text("not an image")
  d = load_paired(tmp_path / "photos", max_images=2)
  assert not d.paired and d.names == ("0", "1")
  split = d.to_imageset()
  assert list(split.fields) == ["image"]
  np.testing.assert_array_equal(split.images, np.stack(clean[:2]))
  grey = tmp_path / "g" / "clean" / "x.png"
  write_png(grey, clean[0][..., 0])  # a grey image becomes RGB
  d = load_paired(tmp_path / "g", target_dir="clean")
  np.testing.assert_array_equal(d.targets[0], np.repeat(clean[0][..., :1], 3, axis=-1))


def test_16_bit_grey_is_scaled_to_8_bits_not_clipped(tmp_path):
  grey16 = np.array([[0, 257 * 100, 65535], [128, 40000, 65000]], np.uint16)
  write_png(tmp_path / "g" / "clean" / "deep.png", grey16)
  assert Image.open(tmp_path / "g" / "clean" / "deep.png").mode.startswith("I")
  d = load_paired(tmp_path / "g", target_dir="clean")
  expected = np.rint(grey16 / 257.0).astype(np.uint8)   # 0..65535 -> 0..255
  np.testing.assert_array_equal(d.targets[0], np.repeat(expected[..., None], 3, axis=-1))


def test_an_image_over_pils_pixel_limit_is_a_data_error(tmp_path, monkeypatch):
  make_pairs(tmp_path / "a", sizes=((6, 8),))
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)   # 48 pixels > 2 x the limit
  with pytest.raises(DataError, match="cannot decode image .*p00.png.*exceeds limit"):
    load_paired(tmp_path / "a", input_dir="rainy", target_dir="norain")


def test_unpaired_names_missing_folders_and_size_mismatch_are_clear_errors(tmp_path):
  make_pairs(tmp_path / "a")
  (tmp_path / "a" / "wrap" / "rainy" / "p01.png").unlink()
  write_png(tmp_path / "a" / "wrap" / "rainy" / "extra.png", np.zeros((6, 8, 3), np.uint8))
  with pytest.raises(DataError, match=r"1 images in rainy/ have no target .*\['extra'\] and "
                                      r"1 images in norain/ have no input .*\['p01'\]"):
    load_paired(tmp_path / "a", input_dir="rainy", target_dir="norain")
  (tmp_path / "a" / "wrap" / "rainy" / "extra.png").unlink()
  with pytest.raises(DataError, match=r": 1 images in norain/ have no input in rainy/ \['p01'\] "
                                      r"\(pairs share"):
    load_paired(tmp_path / "a", input_dir="rainy", target_dir="norain")
  with pytest.raises(MissingDataError, match=r"found no folders \['input', 'norain'\].*rainy/"):
    load_paired(tmp_path / "a", input_dir="input", target_dir="norain")
  with pytest.raises(MissingDataError, match="does not exist"):
    load_paired(tmp_path / "nowhere")
  make_pairs(tmp_path / "b", sizes=((6, 8),))
  write_png(tmp_path / "b" / "wrap" / "rainy" / "p00.png", np.zeros((6, 7, 3), np.uint8))
  with pytest.raises(DataError, match=r"rainy/p00.png is 7x6 .* target .*norain/p00.png is 8x6"):
    load_paired(tmp_path / "b", input_dir="rainy", target_dir="norain")


def test_real_rain100l_pairs_and_the_published_input_psnr():
  data = shared_data()
  archive = data / "restoration" / "rain100l.tar" if data else None
  if archive is None or not archive.exists():
    pytest.skip("the shared restoration data (rain100l.tar) is not present")
  from fdjax.eval import image_quality

  # The cache root a user's load uses ($FDJAX_CACHE: the test session's own, conftest.py).
  d = load_paired(archive, input_dir="rainy", target_dir="norain")
  assert len(d) == 100 and d.names[0] == "001" and d.paired
  groups = d.by_size()
  assert sorted((s.fields["image"].shape[1:3], len(s)) for _, s in groups) == [
      ((321, 481), 66), ((481, 321), 34)]
  psnr_y = np.concatenate([np.asarray(image_quality.psnr(s.fields["image"], s.fields["target"],
                                                         y_channel=True)) for _, s in groups])
  # The "rainy input" row of the deraining tables: 26.90 dB on Y over the 100 pairs.
  assert abs(float(psnr_y.mean()) - 26.90) < 0.01


def test_identical_pairs_are_named_in_a_warning(tmp_path, caplog):
  make_pairs(tmp_path / "s")
  target = np.asarray(Image.open(tmp_path / "s" / "wrap" / "norain" / "p01.png"))
  write_png(tmp_path / "s" / "wrap" / "rainy" / "p01.png", target)   # input = target
  with caplog.at_level("WARNING", logger="fdjax.data.paired"):
    d = load_paired(tmp_path / "s", input_dir="rainy", target_dir="norain")
  assert len(d) == 3   # kept: a warning, not an error
  assert [r.getMessage() for r in caplog.records if "identical" in r.getMessage()] == [
      f"{tmp_path / 's' / 'wrap'}: 1 pair(s) have an input identical to the target, so they "
      f"teach nothing (and score infinite PSNR): ['p01']"]
  caplog.clear()
  with caplog.at_level("WARNING", logger="fdjax.data.paired"):
    load_paired(tmp_path / "s", target_dir="norain")    # clean-only: nothing to compare
    load_paired(tmp_path / "s", input_dir="rainy", target_dir="norain", select="p0[02]")
  assert not caplog.records   # nor when the identical pair is not selected


def test_entries_that_are_not_image_files_are_left_out_with_a_warning(tmp_path, caplog):
  """A sub-folder and a file of another extension on each side: left out, named (as the
  classification folders' loader names them), and the pairs load."""
  make_pairs(tmp_path / "s")
  wrap = tmp_path / "s" / "wrap"
  for side in ("rainy", "norain"):
    write_png(wrap / side / "more" / "p09.png", np.zeros((6, 8, 3), np.uint8))
    (wrap / side / "p04.jfif").write_bytes(b"x")
  with caplog.at_level("WARNING", logger="fdjax.data.paired"):
    d = load_paired(tmp_path / "s", input_dir="rainy", target_dir="norain")
  assert len(d) == 3
  messages = [r.getMessage() for r in caplog.records]
  for side in ("norain", "rainy"):
    assert any(m.startswith(f"{wrap / side}: 2 entries are not image files and are left "
                            f"out, e.g. ['more/', 'p04.jfif']") for m in messages), messages


def test_pair_check_rows_against_numpy():
  from fdjax.data.pair_check import markdown, pair_rows
  from fdjax.data.paired import PairedImages

  rng = np.random.default_rng(1)
  target = rng.integers(40, 200, (16, 20, 3), dtype=np.uint8)
  degraded = target.astype(np.int16)
  degraded[:8] += 20                        # top half raised by 20 in every channel
  degraded[8:12, :, 0] -= 30                # a quarter: red lowered by 30 (luma -7.7: under 12.75)
  degraded[12:, :10] -= 13                  # an eighth lowered by 13 in every channel (luma -11.3)
  degraded[12:, 10:] -= 15                  # an eighth lowered by 15 (luma -13.1: counted)
  degraded = degraded.astype(np.uint8)
  images = PairedImages("s", ("a", "b"), (target, target), (degraded, target.copy()))
  a, b = pair_rows(images)
  diff = degraded.astype(np.float64) - target
  assert a["size"] == "20x16" and a["raised"] == 0.5 and a["lowered"] == 0.125
  np.testing.assert_allclose([a["shift_r"], a["shift_g"], a["shift_b"]], diff.mean(axis=(0, 1)))
  np.testing.assert_allclose(a["psnr_rgb"], 10 * np.log10(255 ** 2 / np.mean(diff ** 2)),
                             atol=1e-3)
  luma = diff @ (np.array([65.481, 128.553, 24.966]) / 255)
  np.testing.assert_allclose(a["psnr_y"], 10 * np.log10(255 ** 2 / np.mean(luma ** 2)), atol=1e-3)
  assert not a["identical"] and b["identical"] and b["psnr_y"] == np.inf and b["lowered"] == 0
  assert "| a | 20x16 |" in markdown([a]) and "identical |" in markdown([b])


def test_a_set_name_can_select_its_images_by_glob(tmp_path):
  import ml_collections

  from fdjax.data import restoration_sets
  from fdjax.errors import ConfigError

  sizes = ((40, 40),) * 3
  targets = make_pairs(tmp_path / "root" / "pairs", sizes=sizes)
  for i in range(4):
    write_png(tmp_path / "root" / "clean" / f"c{i}.png", np.full((40, 40, 3), 60 * i, np.uint8))
  data = ml_collections.ConfigDict(dict(
      source="sets", root=str(tmp_path / "root"), train="clean:c[12]", test="clean",
      test_pairs={"rain": "pairs:p0[02]"}, train_pairs={"rain": "pairs:p01"},
      pair_dirs="rainy,norain", tile=20, validation_fraction=0.0, cache_dir=""))
  ds = restoration_sets.load(data, patch=10, seed=0)
  assert len(ds.train) == 2 * 4    # c1, c2: four 20-tiles each
  assert sorted(np.unique(ds.train.images)) == [60, 120]
  assert ds.test_for("rain").names == ("p00", "p02")
  pairs = ds.train_pairs["rain"]
  assert len(pairs) == 4
  np.testing.assert_array_equal(pairs.fields["target"][0], targets["p01"][:20, :20])
  np.testing.assert_array_equal(pairs.images[0], 255 - targets["p01"][:20, :20])
  spec = lambda pairs: ml_collections.ConfigDict({**data.to_dict(), "train_pairs": {"rain": pairs}})
  with pytest.raises(DataError, match=r"pairs.*: no image name matches 'rain\*' \(names: \['p00', "):
    restoration_sets.load(spec("pairs:rain*"), patch=10, seed=0)
  with pytest.raises(ConfigError, match=r"'pairs:': write '<set>' or '<set>:<glob>'"):
    restoration_sets.load(spec("pairs:"), patch=10, seed=0)


def test_pair_check_command_prints_a_row_per_pair_and_one_line_errors(tmp_path, capsys):
  from absl_cli import run_main

  from fdjax.data import pair_check

  run = lambda *args: run_main(pair_check.main, "fdjax.data.pair_check", *args)

  make_pairs(tmp_path / "s")
  run(f"--set={tmp_path / 's'}")
  out = capsys.readouterr().out.splitlines()
  assert out[0].startswith("s: 3 pairs;") and len(out) == 1 + 2 + 3
  assert out[3].startswith("| p00 | 8x6 |")
  for args, needle in (((), "missing --set"), ((f"--set={tmp_path / 'none'}",), "does not exist"),
                       ((f"--set={tmp_path / 's'}", "--pair_dirs=in,out"), "found no folders"),
                       ((f"--set={tmp_path / 's'}", "--pair_dirs=rainy"), "must name two")):
    with pytest.raises(SystemExit) as exit_info:
      run(*args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and needle in err[0], err


def test_float_and_32_bit_images_are_refused_not_read_as_black_or_white(tmp_path):
  # PIL would convert a float image in 0..1 to black and clip 32-bit values to white.
  from fdjax.errors import ConfigError
  make_pairs(tmp_path / "s")
  Image.fromarray(np.full((6, 8), 0.5, np.float32), mode="F").save(
      tmp_path / "s" / "wrap" / "rainy" / "p00.tif")
  (tmp_path / "s" / "wrap" / "rainy" / "p00.png").unlink()
  with pytest.raises(DataError, match="p00.tif: a floating-point image"):
    load_paired(tmp_path / "s", input_dir="rainy", target_dir="norain")
  wide = tmp_path / "w" / "x.tif"
  wide.parent.mkdir()
  Image.fromarray(np.full((4, 4), 70000, np.int32), mode="I").save(wide)
  with pytest.raises(DataError, match="outside 16 bits"):
    load_paired(wide.parent)
  Image.fromarray(np.arange(16, dtype=np.int32).reshape(4, 4) * 17, mode="I").save(wide)
  with pytest.raises(DataError, match="8-bit values, or a 16-bit image almost black"):
    load_paired(wide.parent)     # 0..255 in 32 bits: neither reading is safe
  Image.fromarray(np.arange(16, dtype=np.int32).reshape(4, 4) * 4000, mode="I").save(wide)
  np.testing.assert_array_equal(load_paired(wide.parent).targets[0][..., 0],
                                np.rint(np.arange(16).reshape(4, 4) * 4000 / 257))
  with pytest.raises(ConfigError, match="two folder names"):   # a one-name pair_dirs
    load_paired(tmp_path / "s", input_dir="rainy", target_dir="")
  assert len(load_paired(tmp_path / "s" / "wrap" / "norain", max_images=0)) == 3   # 0: all


def test_names_in_nfd_and_nfc_are_one_name(tmp_path):
  """macOS writes file names decomposed (NFD), Linux as given (usually NFC): a class or
  pair named 'café' on one must meet 'café' on the other."""
  import unicodedata

  from fdjax import data
  nfc, nfd = (unicodedata.normalize(form, "café") for form in ("NFC", "NFD"))
  for split, name in (("train", nfd), ("train", "tea"), ("test", nfc), ("test", "tea")):
    write_png(tmp_path / "cls" / split / name / "0.png", np.full((4, 4, 3), len(name), np.uint8))
  loaded = data.load(f"folder:{tmp_path / 'cls'}", cache_dir=str(tmp_path / "c"))
  assert loaded.class_names == (nfc, "tea")
  assert list(loaded.train.labels) == list(loaded.test.labels) == [0, 1]
  write_png(tmp_path / "pairs" / "rainy" / f"{nfd}.png", np.zeros((4, 4, 3), np.uint8))
  write_png(tmp_path / "pairs" / "norain" / f"{nfc}.png", np.ones((4, 4, 3), np.uint8))
  pairs = load_paired(tmp_path / "pairs", input_dir="rainy", target_dir="norain")
  assert pairs.names == (nfc,)


def test_a_class_folder_of_sub_folders_says_they_are_not_searched(tmp_path):
  from fdjax import data
  write_png(tmp_path / "train" / "x" / "0.png", np.zeros((4, 4, 3), np.uint8))
  write_png(tmp_path / "train" / "y" / "part1" / "0.png", np.zeros((4, 4, 3), np.uint8))
  write_png(tmp_path / "test" / "x" / "0.png", np.zeros((4, 4, 3), np.uint8))
  with pytest.raises(DataError, match=r"holds the sub-folders \['part1/'\], which are not"):
    data.load(f"folder:{tmp_path}", cache_dir=str(tmp_path / "c"))


def test_pairs_match_by_name_whatever_the_file_order_and_max_images_counts_the_selection(
    tmp_path):
  # 'a-b.png' sorts before 'a.png' ('-' < '.') though the stem 'a' sorts before 'a-b':
  # pairing by position in either list would cross them. Input = target + 1.
  values = {"a": 10, "a-b": 50, "q-1": 90, "rain-1": 130, "rain-2": 170}
  for stem, v in values.items():
    write_png(tmp_path / "set" / "norain" / f"{stem}.png", np.full((4, 4, 3), v, np.uint8))
    write_png(tmp_path / "set" / "rainy" / f"{stem}.png", np.full((4, 4, 3), v + 1, np.uint8))
  d = load_paired(tmp_path / "set", input_dir="rainy", target_dir="norain")
  assert d.names == tuple(sorted(values))
  for name, target, degraded in zip(d.names, d.targets, d.inputs):
    assert int(target[0, 0, 0]) == values[name] and int(degraded[0, 0, 0]) == values[name] + 1
  # max_images counts the selected names: the first selected, not the first of all.
  d = load_paired(tmp_path / "set", input_dir="rainy", target_dir="norain", select="rain-*",
                  max_images=1)
  assert d.names == ("rain-1",) and int(d.targets[0][0, 0, 0]) == 130


def test_one_channel_files_are_flagged_and_scored_on_their_grey_values_on_y(tmp_path):
  """MATLAB scores a one-channel reference on its grey values: the flag comes from the
  file (L, LA, 16-bit I, 1-bit), not from equal channels (an RGB file of a grey photo
  is scored on Y), and reaches the task's scores through the evaluation batches."""
  from fdjax.data import restoration_sets
  from fdjax.data.testsets import TestSet
  from fdjax.tasks.restoration import RestorationTask

  rng = np.random.default_rng(2)
  grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
  for name, image in (("a_l", grey), ("b_rgb", np.repeat(grey[..., None], 3, -1)),
                      ("c_colour", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)),
                      ("d_la", np.stack([grey, grey], -1)),
                      ("e_i16", grey.astype(np.uint16) * 257)):
    write_png(tmp_path / "set" / f"{name}.png", image)
  Image.fromarray(grey > 127).save(tmp_path / "set" / "f_bits.png")
  Image.fromarray(grey).convert("P").save(tmp_path / "set" / "g_grey_palette.png")
  colour = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
  Image.fromarray(colour).convert("P").save(tmp_path / "set" / "h_colour_palette.png")
  images = load_paired(tmp_path / "set")
  assert images.grey == (True, False, False, True, True, True, True, False)
  # kept through the set's operations; one that holds none carries no flag (no field)
  assert restoration_sets.modcrop(images.take([2, 0]), 8).grey == (False, True)
  assert images.take([1, 2]).grey is None
  joined = restoration_sets._concat([images.take([1]), images.take([0])], prefix=True)
  assert joined.grey == (False, True)
  (_, group), = images.by_size()
  np.testing.assert_array_equal(group.fields["grey"], images.grey)
  assert "grey" not in images.take([1, 2]).by_size()[0][1].fields
  assert "grey" not in images.tiles(8).fields   # training tiles: scored as three channels
  # an RGB copy of the same pixels is another test set (its cached scores are not served)
  as_rgb = type(images)(images.name, images.names, images.targets)
  assert TestSet.of_images(images).digest() != TestSet.of_images(as_rgb).digest()
  # one photo cut into training and validation rows: both parts keep its flag
  train, val = restoration_sets.held_out_images(images.take([0]), 0.5, seed=0, tile=4)
  assert train.grey == val.grey == (True,)
  # pair_check's Y column: a one-channel target on its grey values
  from fdjax.data.pair_check import pair_rows
  noisy_grey = np.clip(grey.astype(int) + rng.integers(-9, 10, grey.shape), 0, 255)
  pair = type(images)("p", ("a",), (images.targets[0],),
                      (np.repeat(noisy_grey[..., None], 3, -1).astype(np.uint8),), (True,))
  assert pair_rows(pair)[0]["psnr_y"] == pytest.approx(
      10 * np.log10(255.0 ** 2 / np.mean((noisy_grey - grey.astype(float)) ** 2)), abs=1e-3)
  # the task's per-image PSNR on Y: grey values for the flagged files, Y for the others
  noisy = np.clip(group.fields["image"].astype(int) + rng.integers(-9, 10, (8, 16, 16, 1)),
                  0, 255).astype(np.uint8)
  got = RestorationTask(y_channel=True).per_image(noisy.astype(np.float32),
                                                  dict(group.fields))["psnr"]
  def ref(out, target, on_grey):
    f = (lambda x: x[..., 0].astype(np.float64)) if on_grey else (
        lambda x: 16 + x.astype(np.float64) @ [65.481, 128.553, 24.966] / 255)
    return 10 * np.log10(255.0 ** 2 / np.mean((f(out) - f(target)) ** 2))
  np.testing.assert_allclose(np.asarray(got), [ref(o, t, g) for o, t, g in zip(
      noisy, group.fields["image"], images.grey)], atol=1e-3)
