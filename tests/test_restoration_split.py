"""The restoration validation split holds out whole training images before tiling: no
validation tile shares a photo (or a pixel) with a training tile, the held-out count is
the configured fraction of the images, and a single training image (the bundled photos)
is cut into a training part and a held-out bottom band."""

from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from fdjax.data import restoration_sets
from fdjax.data.paired import PairedImages
from fdjax.errors import DataError

SIZES = [(40, 56), (56, 40), (48, 48), (40, 40), (64, 40), (40, 72), (48, 56), (56, 56),
         (40, 48), (72, 40)]


def photo_set(root: Path) -> dict[str, np.ndarray]:
  """``root/clean/iNN.png``: channel 0 holds the image's number (10 * (i + 1)), the others
  noise, so every tile names the photo it came from."""
  rng = np.random.default_rng(5)
  images = {}
  for i, (h, w) in enumerate(SIZES):
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[..., 0] = 10 * (i + 1)
    (root / "clean").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "clean" / f"i{i:02d}.png")
    images[f"i{i:02d}"] = image
  return images


def config(root: Path, fraction: float, tile: int = 24):
  return ml_collections.ConfigDict(dict(
      source="sets", root=str(root), train="clean", test="clean", test_pairs={},
      train_pairs={}, pair_dirs="rainy,norain", tile=tile, validation_fraction=fraction,
      cache_dir=""))


def photos_of(tiles) -> set[int]:
  return {int(v) // 10 - 1 for v in np.unique(tiles.images[..., 0])}


def n_tiles(h: int, w: int, tile: int) -> int:
  """Tiles per image: ceil(side / tile) per axis (the last ends at the edge)."""
  return -(-h // tile) * -(-w // tile)


def test_validation_tiles_come_from_photos_no_training_tile_comes_from(tmp_path):
  photo_set(tmp_path)
  held = set()
  for seed in range(4):
    ds = restoration_sets.load(config(tmp_path, 0.2), patch=12, seed=seed)
    train, validation = photos_of(ds.train), photos_of(ds.validation)
    assert len(validation) == 2 and not train & validation      # round(0.2 * 10) photos
    assert train | validation == set(range(len(SIZES)))
    # Every tile of a photo is in its split: the tiles of the photos themselves.
    assert len(ds.validation) == sum(n_tiles(*SIZES[i], 24) for i in validation)
    assert len(ds.train) == sum(n_tiles(*SIZES[i], 24) for i in train)
    again = restoration_sets.load(config(tmp_path, 0.2), patch=12, seed=seed)
    assert photos_of(again.validation) == validation              # seeded
    held.add(frozenset(validation))
  assert len(held) > 1                                             # and the seed matters


def test_at_least_one_image_is_held_out_and_one_left_to_train_on(tmp_path):
  photo_set(tmp_path)
  ds = restoration_sets.load(config(tmp_path, 0.01), patch=12, seed=0)
  assert len(photos_of(ds.validation)) == 1        # round(0.1) images would be none
  with pytest.raises(DataError, match=r"holds out 10 of the 10 training images .* none"):
    restoration_sets.load(config(tmp_path, 0.96), patch=12, seed=0)
  ds = restoration_sets.load(config(tmp_path, 0.0), patch=12, seed=0)
  assert ds.validation is None and len(photos_of(ds.train)) == len(SIZES)


def test_a_single_training_image_is_cut_into_rows_above_and_a_held_out_band():
  rng = np.random.default_rng(2)
  image = rng.integers(0, 256, (100, 30, 3), dtype=np.uint8)
  one = PairedImages("photos", ("china",), (image,))
  train, validation = restoration_sets.held_out_images(one, 0.3, seed=0, tile=16)
  assert validation.names == ("china:val",) and train.names == ("china:train",)
  np.testing.assert_array_equal(validation.targets[0], image[70:])   # round(0.3 * 100)
  np.testing.assert_array_equal(train.targets[0], image[:70])
  # A band at least one tile high.
  train, validation = restoration_sets.held_out_images(one, 0.05, seed=0, tile=16)
  np.testing.assert_array_equal(validation.targets[0], image[84:])
  np.testing.assert_array_equal(train.targets[0], image[:84])
  # Paired inputs are cut alike.
  pair = PairedImages("p", ("a",), (image,), (255 - image,))
  train, validation = restoration_sets.held_out_images(pair, 0.3, seed=0, tile=16)
  np.testing.assert_array_equal(validation.inputs[0], 255 - image[70:])
  np.testing.assert_array_equal(train.inputs[0], 255 - image[:70])
  with pytest.raises(DataError, match=r"'china', 100 rows\): its held-out bottom 90 rows .* "
                                      r"leave 10 rows, fewer than a tile"):
    restoration_sets.held_out_images(one, 0.9, seed=0, tile=16)


def test_the_bundled_photos_hold_out_the_bottom_rows_of_china():
  data = ml_collections.ConfigDict(dict(source="photos", tile=48, validation_fraction=0.05,
                                        max_per_split=0, cache_dir=""))
  ds = restoration_sets.load(data, patch=24, seed=0)
  china = restoration_sets.photos()[0].targets[0]          # 427 x 640
  # 48 rows held out (round(0.05 * 427) = 21 < one tile): 14 tiles across; 379 above.
  assert len(ds.validation) == n_tiles(48, 640, 48) == 14
  assert len(ds.train) == n_tiles(379, 640, 48) == 8 * 14
  np.testing.assert_array_equal(ds.validation.images[0], china[379:, :48])
  np.testing.assert_array_equal(ds.train.images[-1], china[379 - 48:379, -48:])


def test_validation_tiles_take_turns_between_the_held_out_photos(tmp_path):
  # EA-Adam scores members on the first fitness_examples validation tiles: they span
  # every held-out photo before any photo gives a second tile.
  photo_set(tmp_path)
  ds = restoration_sets.load(config(tmp_path, 0.3, tile=16), patch=8, seed=1)
  photo = ds.validation.images[:, 0, 0, 0].astype(int) // 10 - 1
  held = sorted(set(photo))
  counts = {i: n_tiles(*SIZES[i], 16) for i in held}
  assert len(held) == 3 and len(photo) == sum(counts.values())
  expected = [i for turn in range(max(counts.values())) for i in held if turn < counts[i]]
  assert photo.tolist() == expected


def test_a_small_set_warns_when_one_image_is_far_over_the_fraction(tmp_path, caplog):
  photo_set(tmp_path)
  with caplog.at_level("WARNING"):
    restoration_sets.load(config(tmp_path, 0.2), patch=12, seed=0)   # 2 of 10: no warning
  assert not caplog.records
  with caplog.at_level("WARNING"):
    restoration_sets.load(config(tmp_path, 0.04), patch=12, seed=0)
  assert "validation_fraction=0.04 of the 10 training images of 'clean' holds out 1 (10%" \
      in caplog.text
