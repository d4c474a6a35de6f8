"""NIQE, the "completely blind" image quality index (Mittal, Soundararajan, Bovik 2013).

No reference image and no trained network: each image's block features
(``fdjax.eval.niqe_features``: 36 natural-scene statistics per 96x96 block at two
scales) are summarised by a multivariate Gaussian (mean ``nu_2``, covariance ``S_2``)
and compared with a Gaussian fitted once to pristine photographs (``nu_1``, ``S_1``)::

    NIQE = sqrt((nu_1 - nu_2)^T pinv((S_1 + S_2) / 2) (nu_1 - nu_2))

Lower is better (more natural). Usage, from evaluation code::

    from fdjax.eval.niqe import niqe
    scores = niqe(images)                      # [N] float32; images [N, H, W, 3] 0..255
    scores = niqe(images, crop_border=4)       # x4 super-resolution convention

Conventions (those of BasicSR's ``calculate_niqe``, which reproduces the MATLAB release):

* input: ``[H, W, C]`` or ``[N, H, W, C]`` with ``C`` = 3 (RGB) or 1 (already luma),
  uint8 or float, 0..255. ``channel='y'`` (default): RGB -> the Y of MATLAB's
  ``rgb2ycbcr`` (BT.601 studio swing, ``16 + (65.481 R + 128.553 G + 24.966 B) / 255``,
  as ``fdjax.eval.image_quality.rgb_to_y`` and BasicSR's ``to_y_channel``);
  ``channel='gray'``: ``0.299 R + 0.587 G + 0.114 B`` (BasicSR's ``convert_to='gray'``;
  MATLAB's ``rgb2gray`` uses 0.2989, 0.5870, 0.1140).
* ``crop_border`` pixels are dropped on every side, then the luma is rounded to integers
  (as MATLAB on uint8 images; BasicSR does the same), then cut to whole 96x96 blocks.
* Patch features whose fit is undefined (a block with no negative or no positive
  coefficient: NaN) are left out of the mean feature by feature and out of the
  covariance row by row (MATLAB's ``nanmean`` / ``nancov``).
* An image needs at least two blocks (two 96x96 blocks fit in it), else its covariance
  is undefined: ``ValueError``.

The pristine model is ``PristineModel(mean [36], cov [36, 36])``. The default one
(``default_model()``) is fitted by ``fdjax.eval.niqe_fit`` from the clean CBSD432 photos
and shipped beside this module (its docstring gives the command); it is not the MATLAB
release's parameter file, so values differ from published NIQE figures. A model saved
as BasicSR's ``niqe_pris_params.npz`` (keys ``mu_pris_param``, ``cov_pris_param``:
the MATLAB release's parameters) loads with ``load_model(path)`` and reproduces them:
with it, fdjax's NIQE of the 19 Set5/Set14 images is within 9.3e-4 relative (5e-3
absolute) of BasicSR's ``niqe`` (run with a float64 transcription of its resize), and
5.7295 for Set14's baboon against MATLAB's published 5.7296 (``tests/test_niqe.py``;
the residual is float32 against float64 moving a moment ratio across a 0.001 step of
the shape grid).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fdjax.errors import DataError, MissingDataError
from fdjax.eval.image_quality import rgb_to_y
from fdjax.eval.niqe_features import BLOCK, NUM_FEATURES, block_features

DEFAULT_MODEL_PATH = Path(__file__).with_name("niqe_pristine_cbsd432.npz")
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
CHANNELS = ("y", "gray")


class PristineModel(NamedTuple):
  """The multivariate Gaussian of pristine block features: ``mean`` ``[36]``,
  ``cov`` ``[36, 36]`` (feature units of ``niqe_features``)."""
  mean: np.ndarray
  cov: np.ndarray


def load_model(path: str | Path) -> PristineModel:
  """A pristine model from an ``.npz`` holding ``mean``/``cov`` (fdjax's) or
  ``mu_pris_param``/``cov_pris_param`` (BasicSR's ``niqe_pris_params.npz``)."""
  path = Path(path)
  if not path.is_file():
    raise MissingDataError(f"NIQE pristine model {path} does not exist")
  with np.load(path) as data:
    for mean_key, cov_key in (("mean", "cov"), ("mu_pris_param", "cov_pris_param")):
      if mean_key in data and cov_key in data:
        mean = np.asarray(data[mean_key], np.float64).reshape(-1)
        cov = np.asarray(data[cov_key], np.float64)
        break
    else:
      raise DataError(f"{path} holds {sorted(data.files)}, not a NIQE model (mean and cov, "
                      f"or mu_pris_param and cov_pris_param)")
  if mean.shape != (NUM_FEATURES,) or cov.shape != (NUM_FEATURES, NUM_FEATURES):
    raise DataError(f"{path}: a NIQE model has mean [{NUM_FEATURES}] and cov "
                    f"[{NUM_FEATURES}, {NUM_FEATURES}], got {mean.shape} and {cov.shape}")
  return PristineModel(mean, cov)


@functools.lru_cache(maxsize=1)
def default_model() -> PristineModel:
  """The pristine model shipped with fdjax (fitted on CBSD432, see ``niqe_fit``)."""
  return load_model(DEFAULT_MODEL_PATH)


def to_luma(images, channel: str = "y") -> jnp.ndarray:
  """float32 ``[..., H, W]``: the luma NIQE reads from ``[..., H, W, C]`` images in
  0..255 (C = 1: taken as luma; C = 3: RGB converted per ``channel``, module docstring)."""
  images = jnp.asarray(images, jnp.float32)
  if channel not in CHANNELS:
    raise ValueError(f"NIQE channel must be one of {CHANNELS}, got {channel!r}")
  if images.shape[-1] == 1:
    return images[..., 0]
  if images.shape[-1] != 3:
    raise ValueError(f"NIQE expects images [..., H, W, 1 or 3], got shape {images.shape}")
  if channel == "y":
    return rgb_to_y(images)[..., 0]
  return jnp.sum(images * jnp.asarray(GRAY_WEIGHTS, jnp.float32), axis=-1)


def feature_gaussian(features) -> tuple[jnp.ndarray, jnp.ndarray]:
  """``(mean [..., 36], cov [..., 36, 36])`` of block features ``[..., B, 36]``: the mean
  over each feature's finite values, the sample covariance (``B - 1``) over the blocks
  whose 36 features are all finite."""
  f = jnp.asarray(features, jnp.float32)
  finite = jnp.isfinite(f)
  zeroed = jnp.where(finite, f, 0.0)
  mean = jnp.sum(zeroed, -2) / jnp.sum(finite, -2)
  rows = jnp.all(finite, -1, keepdims=True)                     # [..., B, 1]
  n = jnp.sum(rows, -2)                                         # [..., 1]
  row_mean = jnp.sum(jnp.where(rows, zeroed, 0.0), -2) / n
  centred = jnp.where(rows, zeroed - row_mean[..., None, :], 0.0)
  cov = jnp.einsum("...bi,...bj->...ij", centred, centred,
                   precision=jax.lax.Precision.HIGHEST) / (n[..., None] - 1)
  return mean, cov


def distance(mean, cov, model: PristineModel) -> jnp.ndarray:
  """float32 ``[...]``: ``sqrt(d^T pinv((S_1 + S_2) / 2) d)``, ``d = nu_1 - nu_2``, for
  ``mean [..., 36]``, ``cov [..., 36, 36]``.

  The pooled covariance is positive definite (the pristine ``S_1`` is, ``S_2`` is
  semi-definite), so its pseudo-inverse is its inverse: the quadratic form is
  ``|L^-1 z|^2`` with ``L`` the Cholesky factor of the pooled covariance scaled to unit
  diagonal and ``z`` the scaled ``d`` (the value is unchanged). In float32 this stays
  within ~1e-5 of float64 on the MATLAB model (condition number ~1.6e5, ~3.4e4 scaled),
  where an eigendecomposition-based ``pinv`` was off by up to 3e-3."""
  d = jnp.asarray(model.mean, jnp.float32) - mean
  pooled = (jnp.asarray(model.cov, jnp.float32) + cov) / 2
  scale = jnp.sqrt(jnp.diagonal(pooled, axis1=-2, axis2=-1))
  unit = pooled / (scale[..., :, None] * scale[..., None, :])
  lower = jnp.linalg.cholesky(unit)
  y = jax.scipy.linalg.solve_triangular(lower, (d / scale)[..., None], lower=True)[..., 0]
  return jnp.sqrt(jnp.sum(y * y, axis=-1))


@functools.partial(jax.jit, static_argnames=("channel", "crop_border"))
def prepare_luma(images, *, channel: str = "y", crop_border: int = 0) -> jnp.ndarray:
  """float32 ``[..., H - 2 crop_border, W - 2 crop_border]``: the rounded luma NIQE
  measures, from ``[..., H, W, C]`` images in 0..255 (module docstring)."""
  luma = to_luma(images, channel)
  if crop_border:
    luma = luma[..., crop_border:-crop_border, crop_border:-crop_border]
  return jnp.round(luma)


@jax.jit
def features_distance(features, model_mean, model_cov) -> jnp.ndarray:
  """float32 ``[...]``: NIQE from block features ``[..., B, 36]`` and a model's arrays."""
  mean, cov = feature_gaussian(features)
  return distance(mean, cov, PristineModel(model_mean, model_cov))


def niqe(images, *, model: PristineModel | None = None, crop_border: int = 0,
         channel: str = "y", block: int = BLOCK) -> jnp.ndarray:
  """float32 ``[]`` or ``[N]``: NIQE of each ``[H, W, C]`` / ``[N, H, W, C]`` image in
  0..255 (module docstring); ``model`` defaults to ``default_model()``. Three jitted
  steps (luma, block features, distance), compiled per image size and batch; images of
  different sizes need separate calls. ``ValueError`` for fewer than two blocks."""
  images = jnp.asarray(images)
  if images.ndim not in (3, 4):
    raise ValueError(f"niqe: expected images [H, W, C] or [N, H, W, C], got shape "
                     f"{images.shape}")
  if crop_border < 0:
    raise ValueError(f"niqe: crop_border must be >= 0, got {crop_border}")
  model = default_model() if model is None else model
  luma = prepare_luma(images, channel=channel, crop_border=int(crop_border))
  h, w = luma.shape[-2:]
  if (h // block) * (w // block) < 2:
    raise ValueError(f"niqe needs at least two {block}x{block} blocks, got an image of "
                     f"{h}x{w} pixels (after crop_border={crop_border})")
  mean = np.asarray(model.mean, np.float32)
  cov = np.asarray(model.cov, np.float32)
  if mean.size != NUM_FEATURES or cov.shape != (NUM_FEATURES, NUM_FEATURES):
    raise ValueError(f"niqe: the model needs mean [{NUM_FEATURES}] and cov "
                     f"[{NUM_FEATURES}, {NUM_FEATURES}], got {mean.shape} and {cov.shape}")
  return features_distance(block_features(luma, block=int(block)),
                           jnp.asarray(mean.reshape(NUM_FEATURES)), jnp.asarray(cov))
