"""PNG comparison grids of restored images: one row per test image, one column per
image kind (input | each method | target), column labels on top, optional row labels
on the left, drawn with PIL's default font.

Every image is centre-cropped to one cell size, ``crop x crop`` pixels, or smaller
when some image is smaller (the smallest height and the smallest width among them), so
large photographs stay readable and rows of different sizes line up. The crop of a
``H x W`` image to ``h x w`` starts at ``((H - h) // 2, (W - w) // 2)``.

Layout (``GridLayout``), in pixels: a ``header``-high label band on top, a
``label_width``-wide band on the left (0 without row labels), ``pad`` pixels of
background around and between the cells; cell (r, c) starts at
``(header + pad + r * (h + pad), label_width + pad + c * (w + pad))`` (y, x).

``compose_grid`` returns the grid as a uint8 array (pure); ``write_grid`` saves it as a
PNG; ``restoration_grid`` runs per-method predictors on a few test images and writes
the grid of one task.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fdjax.json_files import replaced

CROP = 128         # cell side for large images
PAD = 4            # background pixels around and between cells
HEADER = 16        # height of the column-label band
BACKGROUND = 255   # white
TEXT = (0, 0, 0)   # black labels


@dataclasses.dataclass(frozen=True)
class GridLayout:
  """Where everything sits in a grid of ``rows x cols`` cells of ``cell = (h, w)``
  pixels (module docstring)."""

  rows: int
  cols: int
  cell: tuple[int, int]
  label_width: int = 0
  pad: int = PAD
  header: int = HEADER

  @property
  def size(self) -> tuple[int, int]:
    """``(height, width)`` of the whole grid."""
    h, w = self.cell
    return (self.header + self.pad + self.rows * (h + self.pad),
            self.label_width + self.pad + self.cols * (w + self.pad))

  def origin(self, row: int, col: int) -> tuple[int, int]:
    """``(y, x)`` of the top-left pixel of cell ``(row, col)``."""
    h, w = self.cell
    return (self.header + self.pad + row * (h + self.pad),
            self.label_width + self.pad + col * (w + self.pad))


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """The centre ``height x width`` pixels of ``image`` ``[H, W, C]`` (module docstring)."""
  h, w = image.shape[:2]
  if height > h or width > w:
    raise ValueError(f"cannot crop {height}x{width} out of a {h}x{w} image")
  y, x = (h - height) // 2, (w - width) // 2
  return image[y:y + height, x:x + width]


def cell_size(rows: Sequence[Sequence[np.ndarray]], crop: int = CROP) -> tuple[int, int]:
  """``(h, w)``: ``crop`` or less, the smallest height and width of all images."""
  return (min([crop] + [im.shape[0] for row in rows for im in row]),
          min([crop] + [im.shape[1] for row in rows for im in row]))


def _as_rgb(image) -> np.ndarray:
  x = np.asarray(image)
  if x.dtype != np.uint8 or x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[-1] != 3):
    raise ValueError(f"grid images must be uint8 [H, W, 3] or [H, W], got {x.dtype} "
                     f"{list(x.shape)}")
  return np.repeat(x[..., None], 3, -1) if x.ndim == 2 else x


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
  left, _, right, _ = draw.textbbox((0, 0), text, font=font)
  return right - left


def _fit(draw, text: str, font, width: int) -> str:
  """``text`` shortened with '..' to fit ``width`` pixels."""
  if _text_width(draw, text, font) <= width:
    return text
  while text and _text_width(draw, text + "..", font) > width:
    text = text[:-1]
  return text + ".."


def compose_grid(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], *,
                 row_labels: Sequence[str] | None = None, crop: int = CROP,
                 pad: int = PAD) -> np.ndarray:
  """uint8 ``[H, W, 3]``: the grid of ``rows`` (each a list of ``len(labels)`` uint8
  images ``[H_i, W_i, 3]`` or grey ``[H_i, W_i]``, 0..255) under column ``labels``, with
  ``row_labels`` on the left when given. Pure: draws nothing to disk."""
  if not rows or any(len(row) != len(labels) for row in rows):
    raise ValueError(f"need at least one row of {len(labels)} images (one per label), got "
                     f"rows of {[len(r) for r in rows]}")
  if row_labels is not None and len(row_labels) != len(rows):
    raise ValueError(f"{len(row_labels)} row labels for {len(rows)} rows")
  rows = [[_as_rgb(im) for im in row] for row in rows]
  h, w = cell_size(rows, crop)
  font = ImageFont.load_default()
  probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  label_width = 0
  if row_labels is not None:
    label_width = min(max(_text_width(probe, t, font) for t in row_labels) + pad, 2 * w)
  layout = GridLayout(len(rows), len(labels), (h, w), label_width, pad)
  canvas = np.full((*layout.size, 3), BACKGROUND, np.uint8)
  for r, row in enumerate(rows):
    for c, image in enumerate(row):
      y, x = layout.origin(r, c)
      canvas[y:y + h, x:x + w] = center_crop(image, h, w)
  grid = Image.fromarray(canvas)
  draw = ImageDraw.Draw(grid)
  for c, label in enumerate(labels):
    _, x = layout.origin(0, c)
    draw.text((x, 2), _fit(draw, str(label), font, w), fill=TEXT, font=font)
  for r, label in enumerate(row_labels or ()):
    y, _ = layout.origin(r, 0)
    draw.text((pad, y), _fit(draw, str(label), font, label_width - pad), fill=TEXT, font=font)
  return np.asarray(grid)


def write_grid(path: str, rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str],
               **options) -> str:
  """Writes ``compose_grid(rows, labels, **options)`` to ``path`` (PNG); returns ``path``."""
  with replaced(path, "wb") as f:
    Image.fromarray(compose_grid(rows, labels, **options)).save(f, format="PNG")
  return path


def restoration_grid(path: str, predictors: Mapping[str, Callable],
                     inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray] | None = None,
                     *, names: Sequence[str] | None = None, crop: int = CROP) -> str:
  """Writes one task's comparison grid to ``path`` (PNG) and returns ``path``.

  Args:
    predictors: column label -> ``predict(uint8 [H, W, 3]) -> uint8 [H, W, 3]``, in
      column order: ``fdjax.predictor.image_restorer(task, model, variables)`` for a
      model in memory (inside the study), ``fdjax.predictor.load_predictor(run, method)``
      for a finished run's, or any function of the same shapes.
    inputs: the degraded test images, uint8 ``[H_i, W_i, 3]`` (0..255), one row each.
    targets: their clean images (same sizes), or None for no target column.
    names: row labels (e.g. file names), or None.
    crop: cell side; images are restored whole, then centre-cropped (module docstring).

  Columns: ``input | <each predictor> | target``.
  """
  if targets is not None and len(targets) != len(inputs):
    raise ValueError(f"{len(targets)} targets for {len(inputs)} inputs")
  labels = ["input", *predictors, *(["target"] if targets is not None else [])]
  rows = []
  for i, image in enumerate(inputs):
    row = [image] + [np.asarray(predict(image)) for predict in predictors.values()]
    rows.append(row + ([targets[i]] if targets is not None else []))
  return write_grid(path, rows, labels, row_labels=names, crop=crop)
