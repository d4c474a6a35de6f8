"""Draws one image under degradations (rows) at five levels (columns) into a PNG.

By default every classification and restoration degradation but ``denoise`` (``awgn``
on the restoration grid) and ``sr``; ``--names`` picks others.

    python -m fdjax.degradations.grid --out grid.png                  # sklearn digit
    python -m fdjax.degradations.grid --out grid.png --image cat.jpg  # any image file
    python -m fdjax.degradations.grid --out grid.png --source folder:/data/imgs

Columns run from the clean level to the most severe grid level (for JPEG, Q = 101
down to 1), evenly spaced over the grid; each cell is captioned with its level in
the degradation's own units. Standalone on purpose: it reads images with PIL, not
through the data layer.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from PIL import Image, ImageDraw

from fdjax.console import first_paragraph
from fdjax.degradations import registry

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_LABEL_WIDTH = 84
_CAPTION_HEIGHT = 14
_PAD = 4


def digits_image(index: int = 0) -> np.ndarray:
  """uint8 [32, 32, 3]: scikit-learn's 8x8 handwritten digit ``index``, upscaled, grey."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digit = load_digits().images[index] / 16.0 * 255.0
  image = Image.fromarray(digit.astype(np.uint8)).resize((32, 32), Image.BILINEAR)
  return np.repeat(np.asarray(image)[..., None], 3, axis=-1)


def synthetic_image(size: int = 32) -> np.ndarray:
  """uint8 [size, size, 3]: colour gradients, a disc and stripes (no files needed)."""
  yy, xx = np.mgrid[:size, :size] / (size - 1)
  red, green, blue = 40 + 180 * xx, 40 + 180 * yy, 200 - 150 * xx * yy
  disc = (xx - 0.35) ** 2 + (yy - 0.4) ** 2 < 0.05
  stripes = (np.floor(xx * 8) % 2 == 0) & (yy > 0.75)
  image = np.stack([red, green, blue], -1)
  image[disc] = (240, 220, 40)
  image[stripes] = (20, 20, 20)
  return image.round().astype(np.uint8)


def load_image(path: str | Path) -> np.ndarray:
  """uint8 [H, W, 3] from any image file PIL reads (``fdjax.data._decode.rgb_uint8``:
  upright, 16-bit grey scaled, as every loader)."""
  from fdjax.data._decode import rgb_uint8

  with Image.open(path) as image:
    return rgb_uint8(image)


def source_image(source: str) -> np.ndarray:
  """'digits', 'synthetic' or 'folder:DIR' (the first image file under DIR, sorted)."""
  if source == "digits":
    return digits_image()
  if source == "synthetic":
    return synthetic_image()
  if source.startswith("folder:"):
    folder = Path(source.removeprefix("folder:"))
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
      raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    return load_image(files[0])
  raise ValueError(f"unknown source {source!r}; use digits, synthetic or folder:DIR")


def column_levels(name: str, columns: int = 5) -> np.ndarray:
  """``columns`` grid levels of ``name`` from clean to most severe, evenly spaced (the
  whole grid, each level once, when it has fewer points)."""
  grid = registry.levels(name)
  by_severity = grid[np.argsort(registry.normalised_level(name, grid), kind="stable")]
  columns = min(columns, len(grid))
  return by_severity[np.linspace(0, len(grid) - 1, columns).round().astype(int)]


def degradation_grid(image: np.ndarray, names: Sequence[str], columns: int = 5, *,
                     key: jax.Array | None = None, scale: int | None = None) -> Image.Image:
  """The grid as a PIL image: one row per name, ``columns`` levels per row.

  Args:
    image: uint8 [H, W, 3].
    names: registry names, one row each.
    columns: levels per row (clean first).
    key: PRNG key for the random degradations (default ``jax.random.key(0)``).
    scale: nearest-neighbour upscaling of each cell (default: cells about 128 px).
  """
  key = jax.random.key(0) if key is None else key
  height, width = image.shape[:2]
  scale = scale or max(1, 128 // max(height, width))
  cell_w, cell_h = width * scale, height * scale + _CAPTION_HEIGHT
  canvas = Image.new("RGB", (_LABEL_WIDTH + columns * (cell_w + _PAD), len(names) * (cell_h + _PAD)),
                     "white")
  draw = ImageDraw.Draw(canvas)
  batch = np.repeat(image[None], columns, axis=0)
  for row, name in enumerate(names):
    levels = column_levels(name, columns)   # fewer than `columns` for a short grid (sr)
    degraded = np.asarray(registry.apply(name, key, batch[:len(levels)], levels))
    top = row * (cell_h + _PAD)
    draw.text((4, top + cell_h // 2 - 6), name, fill="black")
    for col, (cell, level) in enumerate(zip(degraded, levels)):
      left = _LABEL_WIDTH + col * (cell_w + _PAD)
      canvas.paste(Image.fromarray(cell).resize((cell_w, height * scale), Image.NEAREST), (left, top))
      draw.text((left + 2, top + height * scale + 1), f"{level:g}", fill="black")
  return canvas


def main(argv: Sequence[str] | None = None) -> None:
  """The command line (module docstring): writes ``--out``."""
  parser = argparse.ArgumentParser(description=first_paragraph(__doc__))
  parser.add_argument("--out", required=True, help="PNG file to write")
  parser.add_argument("--source", default="digits", help="digits | synthetic | folder:DIR")
  parser.add_argument("--image", help="an image file (overrides --source)")
  parser.add_argument("--names", default=",".join(registry.NAMES + registry.RESTORATION_NAMES),
                      help="comma-separated registry names, one row each")
  parser.add_argument("--columns", type=int, default=5)
  parser.add_argument("--scale", type=int, default=None, help="cell upscaling (default ~128 px)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  names = [n.strip() for n in args.names.split(",") if n.strip()]
  try:
    for name in names:
      registry.get(name)  # fail early on a typo, listing the valid names
    image = load_image(args.image) if args.image else source_image(args.source)
  except (ValueError, OSError) as e:   # usage and one error line, exit status 2
    parser.error(str(e))
  grid = degradation_grid(image, names, args.columns, key=jax.random.key(args.seed), scale=args.scale)
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  grid.save(args.out)
  print(f"wrote {args.out}: {len(names)} degradations x {args.columns} levels of a "
        f"{image.shape[1]}x{image.shape[0]} image")


if __name__ == "__main__":
  main()
