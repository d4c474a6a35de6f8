"""Images stored turned, with an EXIF orientation (as cameras write photos), are read
upright by every loader: the classification folder source, the paired restoration
folders, ``fdjax.apply``'s reader and the degradation grid's alike (the training loaders
used the stored pixels while ``fdjax.apply`` turned them: a rainy photo paired 180
degrees off its target)."""

import numpy as np
from PIL import Image

from fdjax import data
from fdjax.image_files import read_image_file
from fdjax.data._decode import image_size
from fdjax.data.paired import load_paired
from fdjax.degradations import grid

ORIENTATION = 0x0112
# EXIF orientation -> the numpy operation that turns the stored pixels upright (the
# EXIF 2.3 table: 3 = turned 180 degrees, 6 = stored turned 90 degrees anticlockwise,
# shown after a turn clockwise, 8 = the other way)
UPRIGHT = {3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1),
           8: lambda a: np.rot90(a, 1)}


def _save(path, stored: np.ndarray, orientation: int) -> None:
  exif = Image.Exif()
  exif[ORIENTATION] = orientation
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(stored).save(path, exif=exif.tobytes())   # PNG: lossless


def _image(h, w, seed):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_a_paired_input_stored_turned_is_read_upright_like_its_target(tmp_path):
  for name, orientation in (("a", 3), ("b", 6), ("c", 8)):
    target = _image(6, 8, ord(name))                       # upright: 8 wide, 6 high
    stored = {3: np.rot90(target, 2), 6: np.rot90(target, 1), 8: np.rot90(target, -1)}
    _save(tmp_path / "rainy" / f"{name}.png", np.ascontiguousarray(stored[orientation]),
          orientation)
    np.testing.assert_array_equal(UPRIGHT[orientation](stored[orientation]), target)
    (tmp_path / "norain").mkdir(exist_ok=True)
    Image.fromarray(target).save(tmp_path / "norain" / f"{name}.png")
  pairs = load_paired(tmp_path, input_dir="rainy", target_dir="norain")
  for inputs, targets in zip(pairs.inputs, pairs.targets):
    np.testing.assert_array_equal(inputs, targets)
  np.testing.assert_array_equal(read_image_file(str(tmp_path / "rainy" / "b.png"))[0],
                                pairs.targets[1])


def test_a_class_folder_image_stored_turned_is_read_upright_as_fdjax_apply_reads_it(tmp_path):
  upright = {}
  for split in ("train", "test"):
    for label, name in enumerate(("ant", "bee")):
      for i in range(2):
        image = _image(6, 8, 10 * label + i + (100 if split == "test" else 0))
        path = tmp_path / split / name / f"{i}.png"
        if (split, name, i) == ("train", "bee", 1):   # this one stored turned (6)
          _save(path, np.ascontiguousarray(np.rot90(image, 1)), 6)
          assert image_size(str(path)) == (8, 6)        # (width, height) upright
          turned = str(path)
        else:
          path.parent.mkdir(parents=True, exist_ok=True)
          Image.fromarray(image).save(path)
        upright[split, name, i] = image
  loaded = data.load(f"folder:{tmp_path}", cache_dir=str(tmp_path / "cache"))
  expected = np.stack([upright["train", n, i] for n in ("ant", "bee") for i in range(2)])
  np.testing.assert_array_equal(loaded.train.images, expected)
  np.testing.assert_array_equal(read_image_file(turned)[0], upright["train", "bee", 1])
  np.testing.assert_array_equal(grid.load_image(turned), upright["train", "bee", 1])
