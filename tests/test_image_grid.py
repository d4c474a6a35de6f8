"""The PNG comparison grid: its size follows the documented layout, every cell holds the
centre crop of the image it was given (pixels compared with numpy slices), labels are
drawn in their bands, and ``restoration_grid`` puts input | methods | target in order."""

import numpy as np
import pytest
from PIL import Image

from fdjax.eval import image_grid


def noise(shape, seed):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def dark(region):
  return int(np.sum(region.min(-1) < 128))


def test_grid_size_cells_and_labels():
  rows = [[noise((20, 30, 3), i) for i in range(3)],
          [noise((24, 26, 3), 10 + i) for i in range(3)]]
  grid = image_grid.compose_grid(rows, ["input", "method", "target"])
  # Cells are 20 x 26 (the smallest height and width); header 16, padding 4.
  assert grid.dtype == np.uint8 and grid.shape == (16 + 4 + 2 * (20 + 4), 4 + 3 * (26 + 4), 3)
  for r, row in enumerate(rows):
    for c, image in enumerate(row):
      y, x = 16 + 4 + r * 24, 4 + c * 30
      h, w = image.shape[:2]
      top, left = (h - 20) // 2, (w - 26) // 2
      np.testing.assert_array_equal(grid[y:y + 20, x:x + 26],
                                    image[top:top + 20, left:left + 26])
  # Each column's label is drawn in the header above its cell; the padding stays white.
  for c in range(3):
    assert dark(grid[:16, 4 + c * 30:4 + c * 30 + 26]) > 5
  assert np.all(grid[16:20] == 255) and np.all(grid[:, :4] == 255)


def test_large_images_are_centre_cropped_and_row_labels_drawn():
  big = noise((40, 50, 3), 0)
  grey = noise((40, 50), 1)
  grid = image_grid.compose_grid([[big, grey]], ["a", "b"], row_labels=["img_001"], crop=16)
  layout = image_grid.GridLayout(1, 2, (16, 16), label_width=grid.shape[1] - 4 - 2 * 20)
  assert layout.label_width > 0 and grid.shape[:2] == layout.size
  y, x = layout.origin(0, 0)
  np.testing.assert_array_equal(grid[y:y + 16, x:x + 16], big[12:28, 17:33])
  y, x = layout.origin(0, 1)
  np.testing.assert_array_equal(grid[y:y + 16, x:x + 16], np.repeat(grey[12:28, 17:33, None], 3, -1))
  assert dark(grid[y:y + 16, :layout.label_width]) > 5   # the row label


def test_restoration_grid_writes_input_methods_target(tmp_path):
  inputs = [noise((30, 40, 3), 0), noise((36, 36, 3), 1)]
  targets = [noise((30, 40, 3), 2), noise((36, 36, 3), 3)]
  predictors = {"inverted": lambda x: 255 - x, "flipped": lambda x: x[:, ::-1]}
  path = image_grid.restoration_grid(str(tmp_path / "grids" / "denoise.png"), predictors,
                                     inputs, targets, names=["a.png", "b.png"], crop=24)
  grid = np.asarray(Image.open(path).convert("RGB"))
  label_width = grid.shape[1] - 4 - 4 * (24 + 4)
  layout = image_grid.GridLayout(2, 4, (24, 24), label_width)
  assert grid.shape[:2] == layout.size
  for r, (image, target) in enumerate(zip(inputs, targets)):
    expected = [image, 255 - image, image[:, ::-1], target]  # restored whole, then cropped
    for c, full in enumerate(expected):
      y, x = layout.origin(r, c)
      h, w = full.shape[:2]
      np.testing.assert_array_equal(grid[y:y + 24, x:x + 24],
                                    full[(h - 24) // 2:(h - 24) // 2 + 24,
                                         (w - 24) // 2:(w - 24) // 2 + 24])


def test_bad_rows_fail_clearly():
  with pytest.raises(ValueError, match="one per label"):
    image_grid.compose_grid([[noise((8, 8, 3), 0)]], ["input", "target"])
  with pytest.raises(ValueError, match="uint8"):
    image_grid.compose_grid([[np.zeros((8, 8, 3), np.float32)]], ["input"])
