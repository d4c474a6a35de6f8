"""What the pairs of a paired restoration set hold: one row per pair, to vet training data.

    python -m fdjax.data.pair_check --set=../shared/data/restoration/raintrain.tar

Per pair (input against target, both uint8 0..255): the size, PSNR on RGB and on the Y
channel (dB, whole image; a one-channel target on its grey values, as the evaluation
scores it, ``fdjax.eval.image_quality``), the fraction of pixels whose BT.601 luma the
input RAISES and LOWERS by more than ``--threshold`` (luma units, 0..255 scale; default
12.75 = 5 % of the range), and the mean shift input - target of each colour channel
(0..255 units).

Why: additive degradations (rain streaks, haze's airlight, noise on average) raise pixels
or leave them; a pair whose input LOWERS a large part of the frame, or shifts its mean
colour, holds another change (colour grading, exposure, misregistration) that a restorer
trained on it learns as well. ``raintrain``'s 10 'rainTrainL-*' pairs lower 1-65 % of
their pixels by more than 12.75 and shift single channels by up to 27 levels, and one is
identical to its target; its 12 Rain12 pairs, like the 100 Rain100L test pairs, lower
none and shift R, G and B alike (BUILD_NOTES.md, "Which real rain pairs").
Identical pairs are marked (``fdjax.data.paired`` also warns about them when loading).
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from fdjax.config import parse_list
from fdjax.console import start_cli
from fdjax.data.paired import PairedImages, load_paired
from fdjax.errors import UserError, cli_errors

THRESHOLD = 12.75  # luma change counted as raised / lowered (0..255 scale): 5 % of the range
COLUMNS = ("name", "size", "psnr_rgb", "psnr_y", "raised", "lowered", "shift_r", "shift_g",
           "shift_b", "identical")

_SET = flags.DEFINE_string("set", None, "A paired folder or .tar archive (<root>/<input_dir>/"
                           "<name> with <root>/<target_dir>/<name>).")
_DIRS = flags.DEFINE_string("pair_dirs", "rainy,norain", "Input and target folder names.")
_THRESHOLD = flags.DEFINE_float("threshold", THRESHOLD, "Luma change (0..255) counted as "
                                "raised / lowered.")


def pair_rows(images: PairedImages, threshold: float = THRESHOLD) -> list[dict]:
  """One dict per pair, keys ``COLUMNS`` (module docstring; PSNR ``inf`` for an identical
  pair, fractions in 0..1, shifts in 0..255 units)."""
  from fdjax.eval import image_quality

  if not images.paired:
    raise ValueError(f"{images.name}: pair_rows needs a paired set (inputs and targets)")
  weights = np.asarray(image_quality.BT601_WEIGHTS, np.float64) / 255.0
  rows = []
  for name, target, degraded, grey in zip(images.names, images.targets, images.inputs,
                                          images.grey_flags()):
    diff = degraded.astype(np.float64) - target
    luma = diff @ weights
    shift = diff.reshape(-1, 3).mean(axis=0)
    rows.append(dict(
        name=name, size=f"{target.shape[1]}x{target.shape[0]}",
        psnr_rgb=float(image_quality.psnr(degraded, target)),
        psnr_y=float(image_quality.psnr(degraded, target, y_channel=True, grey=grey)),
        raised=float(np.mean(luma > threshold)), lowered=float(np.mean(luma < -threshold)),
        shift_r=float(shift[0]), shift_g=float(shift[1]), shift_b=float(shift[2]),
        identical=bool(np.array_equal(degraded, target))))
  return rows


def markdown(rows: list[dict]) -> str:
  """The rows as a markdown table (PSNR to 0.01 dB, fractions as %, shifts to 0.1)."""
  lines = ["| pair | size | PSNR RGB | PSNR Y | raised | lowered | shift R, G, B | |",
           "|:--|--:|--:|--:|--:|--:|--:|:--|"]
  for r in rows:
    lines.append(f"| {r['name']} | {r['size']} | {r['psnr_rgb']:.2f} | {r['psnr_y']:.2f} | "
                 f"{100 * r['raised']:.1f} % | {100 * r['lowered']:.1f} % | "
                 f"{r['shift_r']:+.1f}, {r['shift_g']:+.1f}, {r['shift_b']:+.1f} | "
                 f"{'identical' if r['identical'] else ''} |")
  return "\n".join(lines)


def main(argv):
  """The command line (module docstring)."""
  verbosity = start_cli(argv, flags, quoted="--set='my pairs/rain100l.tar'")
  with cli_errors(verbosity):
    if _SET.value is None:
      raise UserError("missing --set; usage: python -m fdjax.data.pair_check --set=<folder or "
                      ".tar> [--pair_dirs=rainy,norain]")
    dirs = parse_list(_DIRS.value)
    if len(dirs) != 2:
      raise UserError(f"--pair_dirs must name two folders, the inputs' and the targets' "
                      f"(e.g. rainy,norain), got {_DIRS.value!r}")
    input_dir, target_dir = dirs
    images = load_paired(_SET.value, input_dir=input_dir, target_dir=target_dir)
    print(f"{images.name}: {len(images)} pairs; raised / lowered = pixels whose luma the "
          f"input changes by more than {_THRESHOLD.value:g} (0..255)")
    print(markdown(pair_rows(images, _THRESHOLD.value)))


if __name__ == "__main__":
  from fdjax.errors import parse_flags_or_exit

  app.run(main, flags_parser=parse_flags_or_exit)
