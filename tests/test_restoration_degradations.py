"""Haze, rain, low light and motion blur: clean levels, monotone severity, physics, jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

import fdjax.degradations as degradations

NAMES = degradations.RESTORATION_NAMES
KEY = jax.random.key(3)


def textured_images(batch: int = 8, size: int = 24) -> np.ndarray:
  """uint8 [batch, size, size, 3]: smooth random scenes in 30..225 with some sharp edges."""
  rng = np.random.default_rng(1)
  smooth = ndimage.gaussian_filter(rng.random((batch, size, size, 3)), sigma=(0, 2, 2, 0))
  smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
  smooth[:, size // 3: size // 2, :, 0] = 1.0  # a bright red band: an edge to smear
  return (30 + 195 * smooth).round().astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_grids_start_at_the_clean_level():
  assert set(NAMES) <= set(degradations.REGISTRY)
  for name in NAMES:
    grid = degradations.levels(name)
    assert grid[0] == degradations.clean_level(name) == 0
    assert np.all(np.diff(grid) > 0)
    assert degradations.normalised_level(name, grid[-1]) == grid[-1]


@pytest.mark.parametrize("name", NAMES)
def test_clean_level_is_a_no_op(name):
  images = textured_images()
  np.testing.assert_array_equal(degradations.apply(name, KEY, images, 0.0), images)
  as_float = degradations.apply_float(name, KEY, images / 255.0, 0.0)
  np.testing.assert_allclose(np.asarray(as_float), images / 255.0, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_degradation_grows_with_the_level(name):
  # The same key and shape give the same draws at every level: only the level changes.
  images = textured_images()
  grid = degradations.levels(name)
  outputs = [np.asarray(degradations.apply(name, KEY, images, level)) for level in grid]
  psnrs = np.array([psnr(out, images) for out in outputs])
  assert psnrs[0] == np.inf
  assert np.all(np.diff(psnrs) < 0), psnrs
  if name == "lowlight":
    brightness = np.array([out.mean() for out in outputs])
    assert np.all(np.diff(brightness) < 0), brightness


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_per_image_levels_jit_and_vmap(name):
  images = textured_images()
  grid = degradations.levels(name)
  levels = grid[np.linspace(0, len(grid) - 1, len(images)).round().astype(int)]
  out = np.asarray(degradations.apply(name, KEY, images, levels))
  assert out.dtype == np.uint8 and out.shape == images.shape
  as_float = degradations.apply_float(name, KEY, images / 255.0, levels)
  assert as_float.dtype == jnp.float32 and as_float.shape == images.shape
  # each image's result depends on its own level only
  for i in (1, len(images) - 1):
    same_level = degradations.apply(name, KEY, images, np.full(len(images), levels[i]))
    np.testing.assert_array_equal(out[i], np.asarray(same_level)[i])
  # under jit and vmap over an extra leading axis (keys and levels traced) = separate calls
  keys = jax.random.split(KEY, 2)
  stacked = jax.jit(jax.vmap(lambda k, x, lv: degradations.apply(name, k, x, lv)))(
      keys, np.stack([images, images[::-1]]), np.stack([levels, levels[::-1]]))
  np.testing.assert_array_equal(stacked[0], degradations.apply(name, keys[0], images, levels))
  np.testing.assert_array_equal(stacked[1], degradations.apply(name, keys[1], images[::-1], levels[::-1]))


def test_haze_follows_the_scattering_model():
  # I = J t + A (1 - t): a white scene minus a black one (same key) is t, the black one
  # is A (1 - t); t = exp(-beta d) with d a ramp of 0.7 per 320 rows from a random top
  # depth in [0.3, 1.0], floored at 0.3, the same in every column.
  n, height = 64, 400
  beta = np.linspace(0.5, 3.0, n).astype(np.float32)
  black = np.zeros((n, height, 3, 3), np.float32)
  dark = np.asarray(degradations.apply_float("haze", KEY, black, beta), np.float64)
  light = np.asarray(degradations.apply_float("haze", KEY, black + 1, beta), np.float64)
  t = light - dark
  airlight = dark / (1 - t)
  per_image = airlight.reshape(n, -1)
  np.testing.assert_allclose(per_image, per_image[:, :1] + 0 * per_image, rtol=1e-4)
  assert np.all((per_image >= 0.8) & (per_image <= 1.0))
  depth = -np.log(t[..., 0, 0]) / beta[:, None]                        # [n, rows]
  np.testing.assert_allclose(t, t[:, :, :1, :1] + 0 * t, atol=1e-6)    # no column change
  top = depth[:, 0]
  assert np.all((top >= 0.3 - 1e-4) & (top <= 1.0 + 1e-4))
  expected = np.maximum(top[:, None] - 0.7 / 320 * np.arange(height), 0.3)
  np.testing.assert_allclose(depth, expected, atol=2e-4)
  assert np.ptp(top) > 0.5                                             # drawn per image
  # A 48-row patch and a 321-row image see the same depth change per row.
  assert np.all(np.abs(np.diff(depth, axis=1)) <= 0.7 / 320 + 2e-4)


def test_rain_only_brightens_and_covers_more_with_density():
  images = textured_images()
  light = np.asarray(degradations.apply("rain", KEY, images, 0.01))
  heavy = np.asarray(degradations.apply("rain", KEY, images, 0.05))
  assert np.all(light >= images) and np.all(heavy >= light)
  changed = lambda out: np.mean(np.any(out != images, axis=-1))
  assert 0 < changed(light) < changed(heavy) < 0.9


def test_rain_adds_the_same_light_whatever_the_background():
  # Rain12's and Rain100L's streaks brighten dark and mid-grey backgrounds alike (additive
  # light); a screen blend J + (1 - J) s would add 0.8 s on the dark one, 0.5 s on the grey.
  dark, grey, white = (np.full((4, 32, 32, 3), v, np.float32) for v in (0.2, 0.5, 1.0))
  add = lambda img: np.asarray(degradations.apply_float("rain", KEY, img, 0.03)) - img
  on_dark, on_grey = add(dark), add(grey)
  assert on_dark.max() > 0.1 and on_dark.min() >= 0
  unclipped = grey + on_grey < 1
  np.testing.assert_allclose(on_grey[unclipped], on_dark[unclipped], atol=1e-6)
  np.testing.assert_allclose(on_dark, np.minimum(on_dark, 0.8), atol=1e-6)   # clipped at 1
  assert np.all(add(white) == 0)


def test_lowlight_mean_follows_gain_and_gamma():
  grey = np.full((8, 24, 24, 3), 0.5, np.float32)
  for k in (0.2, 0.5):
    out = np.asarray(degradations.apply_float("lowlight", KEY, grey, k))
    expected = (1 - k) * 0.5 ** (1 + k)
    noise_sd = np.sqrt(k * (0.01 * expected + 1e-4))
    assert abs(out.mean() - expected) < 5 * noise_sd / np.sqrt(out.size)
    np.testing.assert_allclose(out.std(), noise_sd, rtol=0.05)


@pytest.mark.parametrize("name", NAMES)
def test_float_path_has_finite_gradients_at_the_clean_level(name):
  """apply_float sits inside differentiable pipelines: d(output)/d(image) at the clean
  level (lowlight's noise std sqrt(k * v) had an infinite slope at k = 0) and above it."""
  images = jnp.asarray(textured_images(2, 16), jnp.float32) / 255.0
  clean = degradations.get(name).clean_level
  for level in (clean, float(degradations.levels(name)[-1])):
    grad = jax.grad(lambda x: degradations.apply_float(name, KEY, x, level).sum())(images)
    assert np.all(np.isfinite(np.asarray(grad))), (name, level)


def test_motion_blur_conserves_mass_and_keeps_flat_images():
  dot = np.zeros((4, 25, 25, 3), np.float32)
  dot[:, 12, 12] = 1.0
  lengths = np.array([3.0, 7.0, 11.0, 15.0], np.float32)
  smeared = np.asarray(degradations.apply_float("motion_blur", KEY, dot, lengths))
  np.testing.assert_allclose(smeared.sum(axis=(1, 2)), 1.0, atol=1e-5)
  support = (smeared[..., 0] > 1e-6).sum(axis=(1, 2))
  assert np.all(np.diff(support) > 0) and np.all(support >= lengths)
  flat = np.full((4, 25, 25, 3), 0.4, np.float32)
  np.testing.assert_allclose(degradations.apply_float("motion_blur", KEY, flat, lengths), flat, atol=1e-6)


@pytest.mark.parametrize("padding, scipy_mode", [("zero", "constant"), ("edge", "nearest")])
def test_per_image_convolution_matches_scipy(padding, scipy_mode):
  # Rain's streaks and motion blur convolve each image with its own kernel; asymmetric
  # kernels catch a correlation posing as a convolution, a kernel paired with the wrong
  # image and a wrong border.
  from fdjax.degradations.restoration import _convolve_per_image
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(3, 20, 17, 2)).astype(np.float32)
  kernels = rng.uniform(size=(3, 5, 5)).astype(np.float32)
  out = np.asarray(_convolve_per_image(jnp.asarray(images), jnp.asarray(kernels), padding))
  for image, kernel, got in zip(images, kernels, out):
    for c in range(images.shape[-1]):
      expected = ndimage.convolve(image[..., c].astype(np.float64), kernel, mode=scipy_mode)
      np.testing.assert_allclose(got[..., c], expected, atol=1e-5)
  delta = np.zeros((3, 5, 5), np.float32)
  delta[:, 2, 2] = 1.0
  np.testing.assert_array_equal(_convolve_per_image(images, delta, padding), images)
  with pytest.raises(ValueError, match="odd"):
    _convolve_per_image(images, kernels[:, :4, :4], padding)
  with pytest.raises(ValueError, match="padding"):
    _convolve_per_image(images, kernels, "reflect")


def _orientation(weights):
  """Axial orientation (radians from the vertical, in (-pi/2, pi/2]) of a 2-D weight
  map's second moments about its centre: a line of direction (cos a, sin a) in (rows,
  columns) gives a."""
  w = np.asarray(weights, np.float64)
  dy, dx = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in w.shape), indexing="ij")
  return 0.5 * np.arctan2(2 * (w * dy * dx).sum(), (w * (dy * dy - dx * dx)).sum())


def _streak_orientations(streaks):
  """Per image ``[B, H, W]``: the orientation of the autocorrelation of its streak map
  near zero lag (lags up to 6 pixels), by FFT."""
  out = []
  for s in np.asarray(streaks, np.float64):
    s = s - s.mean()
    f = np.fft.fft2(s, s=(2 * s.shape[0], 2 * s.shape[1]))
    corr = np.fft.fftshift(np.real(np.fft.ifft2(f * np.conj(f))))
    cy, cx = corr.shape[0] // 2, corr.shape[1] // 2
    window = np.maximum(corr[cy - 6:cy + 7, cx - 6:cx + 7], 0.0)
    out.append(_orientation(window))
  return np.array(out)


def test_line_kernels_run_along_their_angle_from_the_vertical():
  from fdjax.degradations.restoration import _line_kernels

  kernels = np.asarray(_line_kernels(jnp.array([0.0, np.pi / 2, 0.3, -0.35]),
                                     jnp.array([6.0, 6.0, 8.0, 8.0]), 11))
  centre = np.zeros((11, 11))
  centre[2:9, 5] = 1.0                 # angle 0: straight down the rows, 7 pixels
  np.testing.assert_allclose(kernels[0], centre, atol=1e-6)
  np.testing.assert_allclose(kernels[1], centre.T, atol=1e-6)
  np.testing.assert_allclose([_orientation(k) for k in kernels[2:]], [0.3, -0.35], atol=0.03)


def test_rain_streaks_fall_within_22_5_degrees_of_vertical_at_every_slant():
  # Rain100L's streaks fall down the rows; training draws each image's slant uniformly
  # in +-22.5 degrees. Seen on black: the streaks alone.
  # (The estimate from the streaks' autocorrelation is off by a few degrees where
  # streaks cross, by up to 12 in one image of 32 over 60 keys: all but the largest
  # within 8 degrees of slack, the largest within 20, against slants of up to 60 or 90
  # degrees that a wrong range or a swapped axis would draw.)
  black = jnp.zeros((32, 96, 96, 3), jnp.float32)
  rain = degradations.apply_float("rain", jax.random.key(3), black, jnp.full((32,), 0.005))
  angles = _streak_orientations(np.asarray(rain)[..., 0])
  largest = np.sort(np.abs(angles))
  assert largest[-2] < np.deg2rad(22.5 + 8) and largest[-1] < np.deg2rad(22.5 + 20), (
      np.rad2deg(angles))
  assert largest[-1] > np.deg2rad(15) and angles.min() < 0 < angles.max()


def test_motion_blur_draws_directions_over_the_half_turn():
  # A point light blurred is the kernel itself: its orientation is the motion's, drawn
  # uniformly over [0, pi) (every axial direction).
  point = np.zeros((64, 21, 21, 3), np.float32)
  point[:, 10, 10] = 1.0
  blurred = degradations.apply_float("motion_blur", jax.random.key(4), jnp.asarray(point),
                                     jnp.full((64,), 12.0))
  angles = np.mod([_orientation(b[..., 0]) for b in np.asarray(blurred)], np.pi)
  counts = np.histogram(angles, bins=4, range=(0, np.pi))[0]
  assert np.all(counts >= 6), counts
