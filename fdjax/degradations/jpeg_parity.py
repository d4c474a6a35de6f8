"""Parity of ``fdjax.degradations.jpeg`` against PIL on real CIFAR-10 test images.

    python -m fdjax.degradations.jpeg_parity --images 1000 [--archive PATH] [--rounding exact]

Reads the first ``images/10`` test images of every class straight from the tar archive
(nothing is written to disk), JPEG-compresses them with PIL and with ``jpeg_float`` at
each quality, and prints q / mean abs diff / PSNR / max abs diff (pixel units 0..255).
"""

from __future__ import annotations

import argparse
import io
import math
import tarfile
import time

import numpy as np
from PIL import Image

from fdjax.console import first_paragraph
from fdjax.degradations.jpeg import jpeg_float

QUALITIES = (1, 5, 10, 25, 50, 75, 90, 95, 100)


def load_cifar_test(archive: str, n: int) -> np.ndarray:
  """uint8 [n',32,32,3]: test/<class>/NNNN.jpg with NNNN < ceil(n/10), in name order."""
  per_class = -(-n // 10)
  found = {}
  with tarfile.open(archive) as tf:
    for m in tf:
      parts = m.name.split("/")
      if m.isfile() and len(parts) == 3 and parts[0] == "test" and int(parts[2][:4]) < per_class:
        with Image.open(io.BytesIO(tf.extractfile(m).read())) as im:
          found[m.name] = np.asarray(im.convert("RGB"))
  return np.stack([found[k] for k in sorted(found)][:n])


def pil_jpeg(images: np.ndarray, quality: int) -> np.ndarray:
  """Reference round trip: PIL save at ``quality`` (PIL defaults) then decode."""
  out = []
  for img in images:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
      out.append(np.asarray(im.convert("RGB")))
  return np.stack(out)


def parity_table(images: np.ndarray, qualities=QUALITIES, rounding: str = "exact"):
  """Rows (q, mean abs diff, PSNR dB, max abs diff) of jpeg_float vs PIL."""
  rows = []
  for q in qualities:
    ref = pil_jpeg(images, q).astype(np.float64)
    ours = np.asarray(jpeg_float(images.astype(np.float32), np.full(len(images), q, np.float32),
                                 rounding=rounding), np.float64)
    diff = ours - ref
    mse = float(np.mean(diff**2))
    psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    rows.append((q, float(np.mean(np.abs(diff))), psnr, float(np.max(np.abs(diff)))))
  return rows


def main(argv=None):
  """The command line (module docstring)."""
  p = argparse.ArgumentParser(description=first_paragraph(__doc__))
  p.add_argument("--images", type=int, default=1000)
  p.add_argument("--archive", default="../shared/data/cifar10-jpeg.tar.gz")
  p.add_argument("--rounding", default="exact", choices=["exact", "straight_through", "smooth"])
  args = p.parse_args(argv)
  t0 = time.time()
  images = load_cifar_test(args.archive, args.images)
  print(f"{len(images)} CIFAR-10 test images {images.shape[1:]}, rounding={args.rounding}")
  print("| q | mean abs diff | PSNR (dB) | max abs diff |")
  print("|---|---|---|---|")
  for q, mad, psnr, mx in parity_table(images, rounding=args.rounding):
    print(f"| {q} | {mad:.4f} | {psnr:.2f} | {mx:.0f} |")
  print(f"({time.time() - t0:.1f} s)")


if __name__ == "__main__":
  main()
