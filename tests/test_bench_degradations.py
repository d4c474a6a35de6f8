"""``python -m fdjax.bench degradations``: fdjax against the paper's CPU pipeline."""

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from fdjax.bench import degradations as bench
from fdjax.errors import UserError

pytest.importorskip("scipy")


def test_small_run_prints_a_table_with_both_columns_and_a_ratio(capsys):
  results = bench.main(["--batch", "64", "--repeats", "1", "--names", "awgn,sapn",
                        "--source", "synthetic", "--seconds", "0.05"])
  out = capsys.readouterr().out
  assert "jax " in out and "images: synthetic" in out and "load average" in out
  header = next(line for line in out.splitlines() if line.startswith("| name"))
  assert "fdjax img/s" in header and "reference img/s" in header and "ratio" in header
  for name in ("awgn", "sapn"):
    row = next(line for line in out.splitlines() if line.startswith(f"| {name} "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1].replace(",", "")) > 0 and float(cells[2].replace(",", "")) > 0
    assert cells[3].endswith("x") and float(cells[3][:-1]) > 0
    fdjax_ips, reference_ips = results[name]["fdjax"], results[name]["reference"]
    assert results[name]["ratio"] == pytest.approx(fdjax_ips / reference_ips)


def test_reference_pipeline_is_the_papers_call_and_fdjax_matches_it_where_deterministic():
  images = bench.synthetic_images(4, seed=1)
  references, _ = bench.reference_functions()
  # the grid levels come back as the paper's Python values
  assert bench.reference_levels("blur", np.float32([0.3, 5.0])) == [0.3, 5.0]
  assert bench.reference_levels("jpeg", np.float32([101.0, 7.0])) == [101, 7]
  assert bench.reference_levels("sapn", np.float32([0.07])) == [0.07]
  np.testing.assert_array_equal(references["jpeg"](images[0], 101), images[0])  # Q 101: clean
  from fdjax import degradations  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  sigmas = np.float32([0.0, 0.7, 2.3, 5.0])
  ours = np.asarray(degradations.apply("blur", jax.random.key(0), images, sigmas))
  theirs = np.stack([references["blur"](x, s) for x, s in
                     zip(images, bench.reference_levels("blur", sigmas))])
  np.testing.assert_array_equal(ours, theirs)
  noisy = references["awgn"](images[0], 10.0)
  assert noisy.dtype == np.uint8 and noisy.shape == images[0].shape


def _png(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, "PNG")
  return buffer.getvalue()


def test_folder_and_archive_sources_read_the_test_split_into_memory(tmp_path):
  rng = np.random.default_rng(0)
  files = {f"data/{split}/cat/{i}.png": rng.integers(0, 256, (32, 32, 3), np.uint8)
           for split in ("train", "test") for i in range(3)}
  files["data/test/dog/big.png"] = rng.integers(0, 256, (40, 48, 3), np.uint8)  # resized
  archive = tmp_path / "images.tar.gz"
  with tarfile.open(archive, "w:gz") as tar:
    for name, image in files.items():
      data = _png(image)
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  images, described = bench.load_images(f"folder:{archive}", 6)
  assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
  assert "test split: 4 of 4 images" in described
  test_images = [im for name, im in files.items() if "/test/cat/" in name]
  assert any((images == im).all(axis=(1, 2, 3)).any() for im in test_images)

  folder = tmp_path / "folder"
  folder.mkdir()
  for i in range(2):
    (folder / f"{i}.png").write_bytes(_png(rng.integers(0, 256, (32, 32, 3), np.uint8)))
  images, described = bench.load_images(f"folder:{folder}", 3)
  assert images.shape == (3, 32, 32, 3) and "2 of 2 images" in described

  with pytest.raises(UserError, match="unknown source"):
    bench.load_images("cifar", 4)
