"""``per_image.csv``: every test image's scores, per row, seed, degradation and level.

One line per (row, seed, degradation, level, image) with the columns::

    row, seed, degradation, test_set, level, image, <metric>...

``level`` is in the degradation's own units (sigma 0..255 for denoise), empty for a real
test set (its inputs scored as they are); ``image`` is the test image's name (its
position when unnamed); the metrics are the task's (restoration: ``psnr`` in dB,
``ssim`` 0..1, NaN under its 11x11 window), as stored. They come from
``results['per_image']`` of ``fdjax.eval.levels.evaluate_all``; the mean of a
(row, seed, degradation, level)'s lines is that level's table value.
"""

from __future__ import annotations

import csv
import os
from typing import Sequence

import numpy as np

from fdjax.json_files import replaced

FILE = "per_image.csv"


def lines(label: str, seed: int, per_image: dict, metrics: Sequence[str]) -> list[list]:
  """The CSV lines of one row and seed (``per_image``: ``{degradation: entry}``)."""
  out = []
  for name, entry in per_image.items():
    for j, level in enumerate(entry["levels"]):
      values = [entry[m][j] if m in entry else [] for m in metrics]
      for i, image in enumerate(entry["names"]):
        out.append([label, seed, name, entry["test_set"], "" if level is None else level,
                    image, *(v[i] if i < len(v) else "" for v in values)])
  return out


def write(workdir: str, entries: Sequence[tuple[str, int, dict]],
          metrics: Sequence[str]) -> str | None:
  """Writes ``<workdir>/per_image.csv`` from ``[(row label, seed, per_image)]``; returns
  its path, or None (nothing written) when no entry has per-image values."""
  body = [line for label, seed, per_image in entries
          for line in lines(label, seed, per_image, metrics)]
  if not body:
    return None
  path = os.path.join(workdir, FILE)
  with replaced(path, newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["row", "seed", "degradation", "test_set", "level", "image", *metrics])
    writer.writerows(body)
  return path


def per_set_means(entry: dict) -> dict:
  """``{metric: {set: mean}}`` for a test set made of several named sets (image names
  '<set>/<name>', ``fdjax.data.restoration_sets``: ``data.test='set5,set14'``): per set,
  the mean over levels of the mean over its images, as the set's own column would be.
  ``{}`` when the names do not split into two or more sets."""
  names = entry.get("names", [])
  sets = [n.partition("/")[0] if "/" in n else None for n in names]
  if None in sets or len(set(sets)) < 2:
    return {}
  order = list(dict.fromkeys(sets))
  out: dict = {}
  for metric, per_level in entry.items():
    if metric in ("test_set", "names", "levels"):
      continue
    values = np.asarray(per_level, np.float64)           # [levels, images]
    out[metric] = {s: float(np.mean(values[:, [i for i, x in enumerate(sets) if x == s]]))
                   for s in order}
  return out
