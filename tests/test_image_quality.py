"""PSNR and SSIM against scikit-image's metrics on real photographs (scikit-learn's two
sample images, cropped small) and their noisy versions."""

import jax
import numpy as np
import pytest
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.datasets import load_sample_images

from fdjax.eval import image_quality as iq


def reference_ssim(clean, restored, channel_axis=-1):
  return structural_similarity(clean, restored, gaussian_weights=True, sigma=1.5,
                               use_sample_covariance=False, data_range=255,
                               channel_axis=channel_axis)


@pytest.fixture(scope="module")
def pairs():
  """Two clean 48x64 crops of real photos and noisy versions (AWGN sigma 20, uint8)."""
  photos = load_sample_images().images
  clean = np.stack([photos[0][100:148, 200:264], photos[1][150:198, 300:364]])
  rng = np.random.default_rng(0)
  noisy = np.clip(np.round(clean + rng.normal(0, 20, clean.shape)), 0, 255).astype(np.uint8)
  return clean, noisy


def test_psnr_rgb_matches_scikit_image_per_image(pairs):
  clean, noisy = pairs
  got = np.asarray(iq.psnr(noisy, clean))
  want = [peak_signal_noise_ratio(c, n, data_range=255) for c, n in zip(clean, noisy)]
  assert got.shape == (2,)
  np.testing.assert_allclose(got, want, atol=1e-4)
  # One image alone gives the same value as in the batch; float 0..255 input as uint8.
  np.testing.assert_allclose(float(iq.psnr(noisy[1], clean[1])), want[1], atol=1e-4)
  np.testing.assert_allclose(np.asarray(iq.psnr(noisy.astype(np.float32), clean)), got,
                             rtol=1e-6)


def test_y_channel_is_bt601_as_matlab_rgb2ycbcr(pairs):
  clean, _ = pairs
  np.testing.assert_allclose(np.asarray(iq.rgb_to_y(clean))[..., 0], rgb2ycbcr(clean)[..., 0],
                             atol=1e-3)


def test_psnr_and_ssim_on_y_with_shaved_border_match_scikit_image(pairs):
  clean, noisy = pairs
  y_clean = rgb2ycbcr(clean)[..., 0][:, 4:-4, 4:-4]
  y_noisy = rgb2ycbcr(noisy)[..., 0][:, 4:-4, 4:-4]
  np.testing.assert_allclose(
      np.asarray(iq.psnr(noisy, clean, y_channel=True, shave=4)),
      [peak_signal_noise_ratio(c, n, data_range=255) for c, n in zip(y_clean, y_noisy)],
      atol=1e-4)
  np.testing.assert_allclose(
      np.asarray(iq.ssim(noisy, clean, y_channel=True, shave=4)),
      [reference_ssim(c, n, channel_axis=None) for c, n in zip(y_clean, y_noisy)], atol=2e-5)


def test_ssim_rgb_matches_scikit_image(pairs):
  clean, noisy = pairs
  got = np.asarray(iq.ssim(noisy, clean))
  want = [reference_ssim(c, n) for c, n in zip(clean, noisy)]
  np.testing.assert_allclose(got, want, atol=2e-5)
  assert 0.2 < min(want) < max(want) < 0.95  # a real, non-trivial comparison


def test_ssim_keeps_its_digits_on_bright_flat_images():
  """Variances as E[x^2] - E[x]^2 in float32 lost digits on bright, nearly flat images
  (6e-6 from scikit-image's float64 at 250 +- 2, 8e-6 at 255; identical white images read
  0.9999998): each image less its own mean first."""
  rng = np.random.default_rng(0)
  for base in (128, 200, 250, 255):
    a = np.clip(base + rng.integers(-2, 3, (40, 48, 3)), 0, 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-1, 2, a.shape), 0, 255).astype(np.uint8)
    assert float(iq.ssim(a, b)) == pytest.approx(reference_ssim(a, b), abs=1e-6), base
  white = np.full((20, 24, 3), 255, np.uint8)
  assert float(iq.ssim(white, white)) == 1.0


def test_identical_images_and_errors(pairs):
  clean, _ = pairs
  assert np.isinf(np.asarray(iq.psnr(clean, clean))).all()
  np.testing.assert_allclose(np.asarray(iq.ssim(clean, clean)), 1.0, atol=1e-5)
  with pytest.raises(ValueError, match="share a shape"):
    iq.psnr(clean[0], clean[0, :10])
  with pytest.raises(ValueError, match="at least 11x11"):
    iq.ssim(clean[0, :10, :10], clean[0, :10, :10])


def test_metrics_run_inside_jit_and_vmap(pairs):
  clean, noisy = pairs
  per_image = jax.jit(jax.vmap(lambda a, b: iq.psnr(a, b, y_channel=True)))(noisy, clean)
  np.testing.assert_allclose(np.asarray(per_image),
                             np.asarray(iq.psnr(noisy, clean, y_channel=True)), rtol=1e-6)


def test_ssim_and_psnr_of_images_in_0_1_with_data_range_1_equal_those_in_0_255():
  image = load_sample_images().images[0][:64, :64].astype(np.float64)
  noisy = np.clip(image + np.random.default_rng(0).normal(0, 20, image.shape), 0, 255)
  assert float(iq.ssim(image / 255, noisy / 255, data_range=1.0)) == pytest.approx(
      float(iq.ssim(image, noisy)), abs=1e-4)
  assert float(iq.psnr(image / 255, noisy / 255, data_range=1.0)) == pytest.approx(
      float(iq.psnr(image, noisy)), abs=1e-3)


def test_images_off_the_data_range_scale_are_refused_when_known(pairs):
  clean, noisy = pairs
  a, b = clean / 255.0, noisy / 255.0
  # 0..1 images at the default 255 would read about 48 dB high (scikit-image: 60.6 here
  # against 12.5 on the 0..255 pair), and 0..255 images at 1 far low.
  assert peak_signal_noise_ratio(a, b, data_range=255) > 40
  for metric in (iq.psnr, iq.ssim):
    with pytest.raises(ValueError, match="values in 0..1 and data_range is 255"):
      metric(a, b)
    with pytest.raises(ValueError, match="values in 0..1 and data_range is 255"):
      metric(a.astype(np.float32), noisy)   # a 0..1 output against a uint8 target
    with pytest.raises(ValueError, match="data_range is 1: pass data_range=255"):
      metric(clean.astype(np.float32), noisy.astype(np.float32), data_range=1.0)
    with pytest.raises(ValueError, match="y_channel=True needs data_range=255"):
      metric(a, b, data_range=1.0, y_channel=True)
  # Images in -1..1 at data_range 2 are on their scale.
  signed = 2 * a - 1, 2 * b - 1
  assert float(iq.psnr(*signed, data_range=2.0)[0]) == pytest.approx(
      peak_signal_noise_ratio(signed[0][0], signed[1][0], data_range=2.0), abs=1e-3)
  # Traced images are not checked (the task's jitted scorer), and agree with the eager call.
  traced = jax.jit(lambda x, y: iq.psnr(x * 255.0, y * 255.0))(a, b)
  np.testing.assert_allclose(np.asarray(traced), np.asarray(iq.psnr(clean, noisy)), rtol=1e-5)


def test_a_greyscale_reference_on_y_is_scored_on_its_grey_values_as_matlab(pairs):
  """MATLAB's scripts score a one-channel image on its grey values (no rgb2ycbcr); fdjax
  reads such a file as three equal channels, whose Y is 16 + 219/255 grey (1.32 dB
  high), unless told ``grey``. The restored image is taken on its full-range luma, its
  grey value where its channels are equal."""
  from PIL import Image
  clean, noisy = pairs
  grey = np.asarray(Image.fromarray(clean[0]).convert("L"))            # [H, W] uint8
  rng = np.random.default_rng(1)
  grey_noisy = np.clip(np.round(grey + rng.normal(0, 12, grey.shape)), 0, 255).astype(np.uint8)
  target, restored = (np.repeat(g[..., None], 3, -1) for g in (grey, grey_noisy))
  on_grey = peak_signal_noise_ratio(grey, grey_noisy, data_range=255)
  assert float(iq.psnr(restored, target, y_channel=True, shave=4, grey=True)) == pytest.approx(
      peak_signal_noise_ratio(grey[4:-4, 4:-4], grey_noisy[4:-4, 4:-4], data_range=255),
      abs=1e-3)
  assert float(iq.ssim(restored, target, y_channel=True, shave=4, grey=True)) == pytest.approx(
      reference_ssim(grey[4:-4, 4:-4], grey_noisy[4:-4, 4:-4], channel_axis=None), abs=2e-5)
  # Not told: BT.601 Y of the equal channels, 20 log10(255/219) dB higher (BasicSR's).
  as_y = peak_signal_noise_ratio(rgb2ycbcr(target)[..., 0], rgb2ycbcr(restored)[..., 0],
                                 data_range=255)
  assert as_y - on_grey == pytest.approx(20 * np.log10(255 / 219), abs=1e-3)
  assert float(iq.psnr(restored, target, y_channel=True)) == pytest.approx(as_y, abs=1e-3)
  # A colour output against the grey target: its full-range luma against the grey values.
  luma = (rgb2ycbcr(noisy[0])[..., 0] - 16) * 255 / 219
  assert float(iq.psnr(noisy[0], target, y_channel=True, grey=True)) == pytest.approx(
      10 * np.log10(255 ** 2 / np.mean((luma - grey) ** 2)), abs=1e-3)
  # Per image in a batch, under jit; RGB scoring ignores the flag (three equal channels).
  flags = np.array([True, False])
  batch = jax.jit(lambda a, b, g: iq.psnr(a, b, y_channel=True, grey=g))(
      np.stack([restored, noisy[1]]), np.stack([target, clean[1]]), flags)
  np.testing.assert_allclose(np.asarray(batch), [on_grey, peak_signal_noise_ratio(
      rgb2ycbcr(clean[1])[..., 0], rgb2ycbcr(noisy[1])[..., 0], data_range=255)], atol=1e-3)
  # Equal images read inf, as everywhere (the luma of equal channels is their value).
  assert np.isinf(float(iq.psnr(target, target, y_channel=True, grey=True)))
  assert float(iq.psnr(restored, target, grey=True)) == pytest.approx(
      peak_signal_noise_ratio(target, restored, data_range=255), abs=1e-4)
