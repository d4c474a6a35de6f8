"""Fitting NIQE's pristine model from clean photographs (the paper's procedure).

As the MATLAB release's ``estimatemodelparam``: every image is cut into 96x96 blocks;
the 36 features of each block are computed (``niqe_features.block_statistics``); only the
blocks whose sharpness (mean local standard deviation at full scale,
``block_statistics``) exceeds ``sharpness_threshold`` (0.75) times the sharpest block of
the same image are kept; the model is the mean (NaN-skipping, per feature) and the
sample covariance (over the blocks with all 36 features finite) of the kept blocks.
The luma is the one ``niqe`` reads (``channel``, rounded to integers); the MATLAB
release read ``rgb2gray`` of its 125 pristine images.

The model shipped as ``fdjax/eval/niqe_pristine_cbsd432.npz`` was made by::

    python -m fdjax.eval.niqe_fit ../shared/data/restoration/cbsd432.tar \\
        fdjax/eval/niqe_pristine_cbsd432.npz

(CBSD432: the 432 Berkeley segmentation photos outside CBSD68, 481x321 JPEG; only the
derived 36-vector and 36x36 matrix are shipped, not the images.)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterable

import jax.numpy as jnp
import numpy as np

from fdjax.eval.niqe import PristineModel, prepare_luma
from fdjax.eval.niqe_features import BLOCK, NUM_FEATURES, block_statistics

SHARPNESS_THRESHOLD = 0.75
CHUNK = 16  # images per jitted call


def sharp_block_features(images, *, sharpness_threshold: float = SHARPNESS_THRESHOLD,
                         channel: str = "y", block: int = BLOCK) -> np.ndarray:
  """float64 ``[M, 36]``: the features of the sharp blocks (module docstring) of
  ``images`` ``[N, H, W, C]`` (one size, 0..255), image by image, blocks row by row."""
  luma = prepare_luma(jnp.asarray(images), channel=channel)
  features, sharpness = block_statistics(luma, block=block)    # [N, B, 36], [N, B]
  features, sharpness = np.asarray(features, np.float64), np.asarray(sharpness, np.float64)
  keep = sharpness > sharpness_threshold * sharpness.max(axis=1, keepdims=True)
  return features[keep]


def gaussian_of(features: np.ndarray) -> PristineModel:
  """The model of block features ``[M, 36]``: NaN-skipping mean, covariance over the
  complete rows (MATLAB ``nanmean`` / ``nancov``), float64."""
  features = np.asarray(features, np.float64)
  complete = features[np.isfinite(features).all(axis=1)]
  if len(complete) < 2:
    raise ValueError(f"a NIQE model needs at least two blocks with finite features, got "
                     f"{len(complete)}")
  return PristineModel(np.nanmean(features, axis=0), np.cov(complete, rowvar=False))


def fit_pristine_model(image_groups: Iterable[np.ndarray], *,
                       sharpness_threshold: float = SHARPNESS_THRESHOLD,
                       channel: str = "y", block: int = BLOCK) -> tuple[PristineModel, int]:
  """``(model, number of blocks kept)`` from ``image_groups``: arrays ``[N, H, W, C]``
  of clean images in 0..255, one size per array (e.g. ``PairedImages.by_size()``)."""
  kept = []
  for group in image_groups:
    group = np.asarray(group)
    for start in range(0, len(group), CHUNK):
      kept.append(sharp_block_features(group[start:start + CHUNK], block=block,
                                       sharpness_threshold=sharpness_threshold,
                                       channel=channel))
  if not kept:
    raise ValueError("fit_pristine_model got no images")
  features = np.concatenate(kept)
  return gaussian_of(features), len(features)


def save_model(path: str | Path, model: PristineModel, **metadata: str) -> None:
  """Writes ``mean``, ``cov`` and string ``metadata`` to an ``.npz`` (``load_model``)."""
  if model.mean.shape != (NUM_FEATURES,):
    raise ValueError(f"save_model: mean must be [{NUM_FEATURES}], got {model.mean.shape}")
  np.savez(path, mean=model.mean, cov=model.cov,
           **{k: np.asarray(str(v)) for k, v in metadata.items()})


def main(argv: list[str]) -> int:
  """``python -m fdjax.eval.niqe_fit <clean set folder or .tar> <out.npz>``."""
  from fdjax.data.paired import load_paired
  if len(argv) != 2:
    print("usage: python -m fdjax.eval.niqe_fit <clean image folder or archive> <out.npz>",
          file=sys.stderr)
    return 2
  source, out = argv
  images = load_paired(source)
  model, blocks = fit_pristine_model(split.fields["image"] for _, split in images.by_size())
  save_model(out, model, source=f"{images.name}: {len(images)} images",
             blocks=str(blocks), sharpness_threshold=str(SHARPNESS_THRESHOLD),
             channel="y (BT.601 luma, rounded)",
             command=f"python -m fdjax.eval.niqe_fit {source} {out}")
  print(f"NIQE pristine model: {blocks} sharp 96x96 blocks of {len(images)} images "
        f"({images.name}) -> {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
