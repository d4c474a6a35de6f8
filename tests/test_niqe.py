"""NIQE (fdjax.eval.niqe): the generalised-Gaussian fits recover scipy's gennorm shapes,
the resize is MATLAB's (Pillow inside, a loop transcription everywhere), MSCN equals
scipy's filtering, the Gaussian and distance equal NumPy's float64 formulas, the
pristine fit keeps the sharp blocks, NIQE ranks degraded photos worse, and on real
Set5/Set14 images it equals BasicSR's ``niqe`` with the MATLAB parameters."""

import jax
import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
from PIL import Image
from scipy.special import gamma as gamma_fn
from sklearn.datasets import load_sample_image

from fdjax.errors import DataError
from fdjax.eval import niqe as niqe_lib
from fdjax.eval.matlab_imresize import imresize
from fdjax.eval.niqe_features import aggd_fit, block_features, ggd_fit, mscn
from fdjax.eval.niqe_fit import gaussian_of, save_model, sharp_block_features
from niqe_reference import basicsr_metrics_dir, load_basicsr_niqe, matlab_imresize_numpy
from test_paired import shared_data


def test_ggd_and_aggd_fits_recover_the_shapes_of_gennorm_samples():
  rng = np.random.default_rng(0)
  shapes = np.array([0.8, 1.5, 2.0, 3.0])
  n = 100_000
  sym = np.stack([scipy.stats.gennorm.rvs(b, size=n, random_state=rng) for b in shapes])
  alpha, sigma = ggd_fit(sym)
  np.testing.assert_allclose(alpha, shapes, rtol=0.04)
  # std of gennorm(beta, scale 1): sqrt(G(3/b) / G(1/b))
  np.testing.assert_allclose(sigma, np.sqrt(gamma_fn(3 / shapes) / gamma_fn(1 / shapes)),
                             rtol=0.02)
  # AGGD with left scale 0.5 and right scale 1.5: a side is drawn with probability
  # proportional to its scale, then |gennorm| times that scale.
  beta_l, beta_r = 0.5, 1.5
  left = rng.random((len(shapes), n)) < beta_l / (beta_l + beta_r)
  asym = np.where(left, -beta_l, beta_r) * np.abs(sym)
  alpha, fit_l, fit_r = aggd_fit(asym)
  np.testing.assert_allclose(alpha, shapes, rtol=0.04)
  np.testing.assert_allclose(fit_l, beta_l, rtol=0.03)
  np.testing.assert_allclose(fit_r, beta_r, rtol=0.03)


def test_imresize_is_matlabs_bicubic():
  rng = np.random.default_rng(1)
  x = rng.uniform(0, 255, (40, 52)).astype(np.float32)
  half = np.asarray(imresize(x, 0.5))
  assert half.shape == (20, 26)
  np.testing.assert_allclose(half, matlab_imresize_numpy(x, 0.5), atol=2e-4)
  # Pillow's bicubic (a = -0.5, support stretched when shrinking, same pixel centres)
  # differs only where the kernel meets the border (Pillow renormalises, MATLAB mirrors).
  pil = np.asarray(Image.fromarray(x, mode="F").resize((26, 20), Image.BICUBIC))
  np.testing.assert_allclose(half[3:-3, 3:-3], pil[3:-3, 3:-3], atol=2e-3)
  np.testing.assert_allclose(np.asarray(imresize(x, 2.0)), matlab_imresize_numpy(x, 2.0),
                             atol=2e-4)
  flat = np.full((24, 24), 37.25, np.float32)
  assert np.all(np.asarray(imresize(flat, 0.5)) == 37.25)


def test_mscn_is_gaussian_normalisation_with_replicated_borders():
  rng = np.random.default_rng(2)
  x = rng.integers(0, 256, (2, 30, 41)).astype(np.float64)
  x[1] = 101.0                                                 # flat: MSCN exactly 0
  t = np.arange(7) - 3.0
  g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * (7 / 6) ** 2))  # fspecial
  g /= g.sum()
  mu = np.stack([scipy.ndimage.correlate(im, g, mode="nearest") for im in x])
  sq = np.stack([scipy.ndimage.correlate(im * im, g, mode="nearest") for im in x])
  expected = (x - mu) / (np.sqrt(np.abs(sq - mu * mu)) + 1)
  got = np.asarray(jax.jit(mscn)(x.astype(np.float32)))
  np.testing.assert_allclose(got, expected, atol=2e-4)
  assert np.all(got[1] == 0)


def test_feature_gaussian_and_distance_equal_numpy_float64():
  rng = np.random.default_rng(3)
  features = rng.normal(size=(2, 40, 36)) * np.linspace(0.05, 2, 36)
  features[0, 3, 5] = features[1, 7, 0] = features[1, 8, 35] = np.nan
  mean, cov = jax.jit(niqe_lib.feature_gaussian)(features.astype(np.float32))
  a = rng.normal(size=(36, 36))
  model = niqe_lib.PristineModel(rng.normal(size=36), a @ a.T / 36 + 0.01 * np.eye(36))
  got = niqe_lib.features_distance(features.astype(np.float32), model.mean, model.cov)
  for i, f in enumerate(features):
    complete = f[~np.isnan(f).any(axis=1)]
    np.testing.assert_allclose(mean[i], np.nanmean(f, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov[i], np.cov(complete, rowvar=False), rtol=1e-4, atol=1e-6)
    d = model.mean - np.nanmean(f, axis=0)
    expected = np.sqrt(d @ np.linalg.pinv((model.cov + np.cov(complete, rowvar=False)) / 2)
                       @ d)
    np.testing.assert_allclose(got[i], expected, rtol=1e-4)


@pytest.fixture(scope="module")
def photo_crops():
  """Three 192x192 (four-block) crops of scikit-learn's bundled photos, uint8 RGB."""
  china, flower = load_sample_image("china.jpg"), load_sample_image("flower.jpg")
  return np.stack([china[100:292, 200:392], china[200:392, 400:592], flower[50:242, 60:252]])


def test_pristine_fit_keeps_the_sharp_blocks_of_each_image():
  # Blocks of each image (row by row) carry noise of std 40, 34, 10, 2 on a flat grey:
  # local std ~ noise std, so only the first two pass 0.75 x the sharpest.
  rng = np.random.default_rng(4)
  images = np.full((3, 192, 192, 3), 128.0)
  for k, std in enumerate((40, 34, 10, 2)):
    rows, cols = slice(96 * (k // 2), 96 * (k // 2 + 1)), slice(96 * (k % 2), 96 * (k % 2 + 1))
    images[:, rows, cols] += rng.normal(0, std, (3, 96, 96, 1))
  images = np.clip(images, 0, 255)
  kept = sharp_block_features(images)
  luma = np.round(niqe_lib.to_luma(images))
  expected = np.asarray(block_features(luma))[:, :2].reshape(-1, 36)
  np.testing.assert_array_equal(kept, expected)
  model = gaussian_of(np.concatenate([kept, np.full((1, 36), np.nan)]))
  np.testing.assert_allclose(model.mean, kept.mean(0), rtol=1e-12)
  np.testing.assert_allclose(model.cov, np.cov(kept, rowvar=False), rtol=1e-12)


def test_niqe_ranks_noisy_and_blurred_photos_worse(photo_crops):
  rng = np.random.default_rng(5)
  clean = photo_crops.astype(np.float32)
  noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255)
  blurred = scipy.ndimage.gaussian_filter(clean, sigma=(0, 2.5, 2.5, 0))
  scores = np.asarray(niqe_lib.niqe(np.stack([clean[0], noisy[0], blurred[0]])))
  assert scores.shape == (3,) and np.all(np.isfinite(scores))
  assert scores[0] < scores[1] and scores[0] < scores[2], scores
  scores = np.asarray(niqe_lib.niqe(np.stack([clean[1], noisy[1], blurred[1]])))
  assert scores[0] < scores[1] and scores[0] < scores[2], scores


def test_bad_input_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="two 96x96 blocks"):
    niqe_lib.niqe(np.zeros((100, 150, 3), np.uint8))
  with pytest.raises(ValueError, match="1 or 3"):
    niqe_lib.niqe(np.zeros((192, 192, 2), np.uint8))
  np.savez(tmp_path / "bad.npz", weights=np.zeros(3))
  with pytest.raises(DataError, match="not a NIQE model"):
    niqe_lib.load_model(tmp_path / "bad.npz")


def test_shipped_pristine_model_is_a_valid_gaussian_and_saves_round_trip(tmp_path):
  model = niqe_lib.default_model()
  assert model.mean.shape == (36,) and model.cov.shape == (36, 36)
  np.testing.assert_allclose(model.cov, model.cov.T)
  assert np.linalg.eigvalsh(model.cov).min() > 0
  save_model(tmp_path / "m.npz", model, source="test")
  again = niqe_lib.load_model(tmp_path / "m.npz")
  np.testing.assert_array_equal(again.mean, model.mean)
  np.testing.assert_array_equal(again.cov, model.cov)


def _bt601_y(rgb: np.ndarray) -> np.ndarray:
  """MATLAB rgb2ycbcr's Y, rounded, computed here in float64 (independent of fdjax)."""
  rgb = rgb.astype(np.float64)
  return np.round(16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2])
                  / 255)


def test_niqe_equals_basicsr_on_set5_and_set14():
  reference = load_basicsr_niqe()
  if reference is None:
    pytest.skip("BasicSR not installed (pip install --no-deps basicsr==1.4.2)")
  data = shared_data()
  if data is None:
    pytest.skip("shared data folder not found")
  from fdjax.data.paired import load_paired
  set14 = load_paired(data / "restoration" / "set14.tar")
  set5 = load_paired(data / "restoration" / "set5.tar")
  images = [set14.targets[set14.names.index(n)] for n in ("img_003", "img_009", "img_010",
                                                          "img_012")]
  images.append(set5.targets[set5.names.index("baby")])
  images = np.stack(images)                                    # five 512x512 photos
  basicsr_niqe, params = reference
  model = niqe_lib.load_model(basicsr_metrics_dir() / "niqe_pris_params.npz")
  ours = np.asarray(niqe_lib.niqe(images, model=model))
  expected = np.array([basicsr_niqe(_bt601_y(im).astype(np.float32), params["mu_pris_param"],
                                    params["cov_pris_param"], params["gaussian_window"])
                       for im in images])
  # Residual: float32 here against float64 there; a moment ratio that rounds to the
  # other side of a 0.001 step of the shape grid moves one block's alpha.
  np.testing.assert_allclose(ours, expected, rtol=2e-3, atol=0)
  assert np.abs(ours - expected).max() < 0.01


def test_niqe_equals_basicsr_s_on_bundled_photos_without_basicsr_installed():
  # BasicSR's values with fdjax's shipped pristine model, computed once
  # (tests/niqe_reference.py): the features, their AGGD fits, the neighbour products and
  # the distance checked on every machine, BasicSR installed or not.
  from niqe_reference import BASICSR_NIQE_OF_SAMPLES, sample_photos

  ours = [float(niqe_lib.niqe(p)) for p in sample_photos()]
  np.testing.assert_allclose(ours, BASICSR_NIQE_OF_SAMPLES, rtol=2e-3, atol=0)
