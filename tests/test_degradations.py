"""The paper's four degradations against the reference it used (imagedegrade 0.2.3 / scipy).

Blur is compared value by value with ``scipy.ndimage.gaussian_filter`` called exactly
as the reference calls it; the noises by their statistics against closed forms and
against imagedegrade's numpy functions.
"""

import io
import math
import tarfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import fdjax.degradations as degradations
from fdjax.degradations import blur as blur_lib

imagedegrade_np = pytest.importorskip("imagedegrade.np")

CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
SIGMAS = degradations.levels("blur")
KEY = jax.random.key(0)


def reference_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """The reference's call on one uint8 [H, W, 3] image (scipy skips sigma-0 axes)."""
  return ndimage.gaussian_filter(image, sigma=[sigma, sigma, 0], truncate=3.0, mode="nearest")


def synthetic_images() -> np.ndarray:
  """uint8 [8, 20, 24, 3]: noise, ramps, a checkerboard, flat 0 / 255, sparse dots."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[:20, :24]
  planes = [
      rng.integers(0, 256, (20, 24, 3)),
      np.stack([xx * 11 % 256, yy * 13 % 256, (xx + yy) * 5 % 256], -1),
      np.stack([xx * 10, 255 - yy * 12, np.full_like(xx, 128)], -1),
      np.repeat(((xx // 3 + yy // 3) % 2 * 255)[..., None], 3, -1),
      np.full((20, 24, 3), 255),
      np.zeros((20, 24, 3)),
      (rng.random((20, 24, 3)) < 0.05) * 255,
      np.stack([xx * yy % 256, (xx * 7 + 3) % 256, 254 - yy * 2], -1),
  ]
  return np.stack(planes).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def cifar_test_images() -> np.ndarray:
  """uint8 [64, 32, 32, 3]: the first 6-7 test images of each CIFAR-10 class."""
  if not CIFAR.exists():
    pytest.skip(f"{CIFAR} not present")
  per_class: dict[str, list[np.ndarray]] = {}
  with tarfile.open(CIFAR) as archive:
    for member in archive:
      parts = member.name.split("/")
      if member.isfile() and parts[0] == "test" and len(per_class.get(parts[1], [])) < 7:
        data = archive.extractfile(member).read()
        per_class.setdefault(parts[1], []).append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
  return np.stack([im for name in sorted(per_class) for im in per_class[name]])[:64]


def blur(images, sigma):
  return np.asarray(degradations.apply("blur", KEY, images, sigma))


# ---------------------------------------------------------------- registry and levels


def test_names_grids_and_clean_levels_follow_the_paper():
  assert degradations.NAMES == ("jpeg", "blur", "awgn", "sapn")
  assert degradations.RESTORATION_NAMES == ("haze", "rain", "lowlight", "motion_blur")
  np.testing.assert_array_equal(degradations.levels("jpeg"), np.arange(1, 102))
  np.testing.assert_array_equal(degradations.levels("blur"), np.arange(51) / 10)
  np.testing.assert_array_equal(degradations.levels("awgn"), np.arange(51))
  np.testing.assert_array_equal(degradations.levels("sapn"), np.arange(26) / 100)
  assert [degradations.clean_level(n) for n in degradations.NAMES] == [101, 0, 0, 0]
  entry = degradations.get("blur")
  with pytest.raises(AttributeError):
    entry.clean_level = 1.0  # frozen


def test_jpeg_is_reported_as_100_minus_quality_and_others_as_their_level():
  assert degradations.normalised_level("jpeg", 100) == 0
  assert degradations.normalised_level("jpeg", 1) == 99
  assert degradations.normalised_level("jpeg", 101) == -1
  np.testing.assert_allclose(degradations.normalised_level("blur", np.array([0.0, 2.5])), [0, 2.5])
  assert degradations.normalised_level("sapn", 0.25) == 0.25


def test_sample_levels_is_uniform_over_the_grid_under_jit():
  draw = jax.jit(degradations.sample_levels, static_argnums=(0, 2))
  values = np.asarray(draw("sapn", KEY, 26_000))
  grid = degradations.levels("sapn").astype(np.float32)
  assert np.isin(values, grid).all()
  counts = np.array([(values == g).sum() for g in grid])
  # each count ~ Binomial(26000, 1/26): mean 1000, sd ~31
  assert np.abs(counts - 1000).max() < 5 * math.sqrt(26_000 / 26 * 25 / 26)


# ---------------------------------------------------------------- blur


def test_blur_equals_scipy_bit_for_bit_on_synthetic_images_at_every_grid_sigma():
  images = synthetic_images()
  batch = np.repeat(images[None], len(SIGMAS), 0).reshape(-1, *images.shape[1:])
  sigmas = np.repeat(SIGMAS, len(images)).astype(np.float32)
  ours = np.asarray(blur(batch, sigmas))
  expected = np.stack([reference_blur(im, s) for im, s in zip(batch, np.repeat(SIGMAS, len(images)))])
  np.testing.assert_array_equal(ours, expected)


def test_blur_matches_scipy_on_real_cifar_images(cifar_test_images):
  images = cifar_test_images
  batch = np.repeat(images[None], len(SIGMAS), 0).reshape(-1, 32, 32, 3)
  sigmas64 = np.repeat(SIGMAS, len(images))
  ours = np.asarray(blur(batch, sigmas64.astype(np.float32))).astype(int)
  expected = np.stack([reference_blur(im, s) for im, s in zip(batch, sigmas64)]).astype(int)
  identical = np.mean(ours == expected)
  max_diff = np.abs(ours - expected).max()
  print(f"blur parity on {len(images)} CIFAR test images x {len(SIGMAS)} sigmas: "
        f"{identical:.6f} identical, max diff {max_diff}")
  assert max_diff <= 1 and identical >= 0.999
  np.testing.assert_array_equal(ours, expected)  # what this implementation actually reaches


def test_blur_equals_imagedegrade_blur():
  images = synthetic_images()[:4]
  for sigma in (0.3, 1.7, 5.0):
    ours = np.asarray(blur(images, np.full(4, sigma, np.float32)))
    expected = np.stack([imagedegrade_np.blur(im, sigma) for im in images])
    np.testing.assert_array_equal(ours, expected)


def test_blur_off_the_grid_stays_close_to_scipy():
  # Off the 0.1 grid the weights are float32 and flat or linear neighbourhoods follow
  # exact arithmetic, not scipy's float64 noise (which can give v - 1 on a flat v).
  images = synthetic_images()
  for sigma in (0.37, 1.234, 4.99):
    sigma = float(np.float32(sigma))  # scipy gets the very sigma we compute with
    ours = np.asarray(blur(images, np.full(len(images), sigma, np.float32))).astype(int)
    expected = np.stack([reference_blur(im, sigma) for im in images]).astype(int)
    assert np.abs(ours - expected).max() <= 2
    assert np.mean(ours[0] == expected[0]) > 0.99  # the noise image: no flat regions


def test_blur_sigma_zero_is_an_exact_no_op():
  images = synthetic_images()
  np.testing.assert_array_equal(blur(images, np.zeros(len(images), np.float32)), images)


def test_float_blur_matches_scipy_on_float_input():
  images = synthetic_images().astype(np.float32) / 255.0
  sigmas = np.array([0.0, 0.1, 0.6, 1.5, 2.45, 3.3, 4.2, 5.0], np.float32)
  ours = np.asarray(jax.jit(lambda x, s: degradations.apply_float("blur", KEY, x, s))(images, sigmas))
  expected = np.stack([
      ndimage.gaussian_filter(im.astype(np.float64), sigma=[float(s), float(s), 0], truncate=3.0,
                              mode="nearest") for im, s in zip(images, sigmas)])
  np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


def test_blur_batch_with_per_image_sigmas_equals_per_image_calls_and_vmap():
  images = synthetic_images()
  sigmas = np.array([0.0, 0.4, 1.0, 1.9, 2.5, 3.6, 4.4, 5.0], np.float32)
  batch = np.asarray(blur(images, sigmas))
  single = np.concatenate([blur(im[None], s[None]) for im, s in zip(images, sigmas)])
  np.testing.assert_array_equal(batch, single)
  one_image = lambda im, s: degradations.apply("blur", KEY, im[None], s[None])[0]
  vmapped = jax.jit(jax.vmap(one_image))(images, sigmas)
  np.testing.assert_array_equal(batch, vmapped)
  # vmap over a second batch axis, levels traced per image
  stacked = jax.jit(jax.vmap(lambda x, s: degradations.apply("blur", KEY, x, s)))(
      images.reshape(2, 4, *images.shape[1:]), sigmas.reshape(2, 4))
  np.testing.assert_array_equal(batch, np.asarray(stacked).reshape(batch.shape))


def test_blur_weights_are_scipys():
  for sigma in (0.5, 2.3, 5.0):
    radius = int(3.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    scipy_weights = np.exp(-0.5 / sigma**2 * x**2)
    scipy_weights /= scipy_weights.sum()
    half = np.asarray(jax.jit(blur_lib.half_kernel_float)(jnp.array([sigma])))[0]
    np.testing.assert_allclose(half[: radius + 1], scipy_weights[radius:], rtol=1e-6)
    assert (half[radius + 1:] == 0).all()


# ---------------------------------------------------------------- AWGN


def test_awgn_noise_has_the_closed_form_mean_and_variance_where_nothing_clips():
  grey = np.full((16, 32, 32, 3), 128, np.uint8)
  n = grey.size
  for sigma in (5.0, 20.0):
    noise = np.asarray(degradations.apply("awgn", KEY, grey, sigma)).astype(float) - 128
    # truncation: floor(128 + sigma z) - 128 has mean -1/2 and variance sigma^2 + 1/12
    assert abs(noise.mean() + 0.5) < 5 * sigma / math.sqrt(n)
    assert abs(noise.var() - (sigma**2 + 1 / 12)) < 5 * sigma**2 * math.sqrt(2 / n)
    np.random.seed(301)
    reference = np.uint8(imagedegrade_np.noise(grey[0], sigma).clip(0, 255)).astype(float) - 128
    assert abs(reference.mean() - noise.mean()) < 5 * sigma * math.sqrt(1 / n + 1 / reference.size)


def test_awgn_clips_then_truncates_like_the_reference():
  dark = np.full((16, 32, 32, 3), 5, np.uint8)
  ours = np.asarray(degradations.apply("awgn", KEY, dark, 20.0))
  np.random.seed(301)
  reference = np.stack([np.uint8(imagedegrade_np.noise(im, 20.0).clip(0, 255)) for im in dark])
  p_zero = 0.5 * math.erfc(4 / 20 / math.sqrt(2))  # P(5 + 20 z < 1)
  bound = 5 * math.sqrt(p_zero * (1 - p_zero) / dark.size)
  assert abs(np.mean(ours == 0) - p_zero) < bound
  assert abs(np.mean(reference == 0) - p_zero) < bound


def test_awgn_levels_apply_per_image_and_zero_is_a_no_op():
  grey = np.full((16, 32, 32, 3), 128, np.uint8)
  sigmas = np.repeat([0.0, 10.0, 30.0, 50.0], 4)
  out = np.asarray(degradations.apply("awgn", KEY, grey, sigmas))
  np.testing.assert_array_equal(out[:4], grey[:4])
  stds = out[4:].reshape(12, -1).astype(float).std(1)
  np.testing.assert_allclose(stds, np.repeat([10.0, 30.0, 50.0], 4), rtol=0.05)


# ---------------------------------------------------------------- SAPN


def salt_pepper_fractions(values: np.ndarray, salt: int) -> tuple[float, float]:
  return float(np.mean(values == 0)), float(np.mean(values == salt))


@pytest.mark.parametrize("name, salt", [("sapn", 255), ("sapn_paper", 1)])
def test_sapn_fractions_match_closed_form_and_imagedegrade(name, salt):
  grey = np.full((16, 32, 32, 3), 128, np.uint8)
  p = 0.2
  ours = np.asarray(degradations.apply(name, KEY, grey, p))
  assert set(np.unique(ours)) == {0, salt, 128}
  # pepper first with p/2, then salt with p/2 overwriting: P(salt) = p/2, P(0) = p/2 (1 - p/2)
  expected_zero, expected_salt = p / 2 * (1 - p / 2), p / 2
  bound = lambda q: 5 * math.sqrt(q * (1 - q) / grey.size)
  zero, salted = salt_pepper_fractions(ours, salt)
  assert abs(zero - expected_zero) < bound(expected_zero)
  assert abs(salted - expected_salt) < bound(expected_salt)
  np.random.seed(301)
  intensity_range = (0, 1) if salt == 1 else (0, 255)  # the paper's call uses the default (0, 1)
  reference = np.uint8(np.stack([imagedegrade_np.saltpepper(im, p, intensity_range) for im in grey]))
  ref_zero, ref_salt = salt_pepper_fractions(reference, salt)
  assert abs(ref_zero - expected_zero) < bound(expected_zero)
  assert abs(ref_salt - expected_salt) < bound(expected_salt)


def test_sapn_draws_every_channel_independently_and_zero_is_a_no_op():
  grey = np.full((16, 32, 32, 3), 128, np.uint8)
  out = np.asarray(degradations.apply("sapn", KEY, grey, np.linspace(0.25, 0.25, 16)))
  salted = out == 255
  some_not_all = np.mean(salted.any(-1) & ~salted.all(-1))
  q = 0.125
  assert abs(some_not_all - (1 - q**3 - (1 - q) ** 3)) < 0.02
  np.testing.assert_array_equal(degradations.apply("sapn", KEY, grey, 0.0), grey)


def test_sapn_float_path_uses_the_same_draws():
  images = np.random.default_rng(2).integers(0, 256, (16, 32, 32, 3)).astype(np.uint8)
  levels = np.linspace(0.0, 0.25, len(images))
  as_uint8 = np.asarray(degradations.apply("sapn", KEY, images, levels))
  as_float = np.asarray(degradations.apply_float("sapn", KEY, images / 255.0, levels))
  np.testing.assert_allclose(as_float * 255.0, as_uint8, atol=1e-3)


# ---------------------------------------------------------------- JPEG wiring


def test_jpeg_is_wired_to_the_codec_and_101_is_clean():
  images = synthetic_images()[:2, :16, :16]
  out = np.asarray(degradations.apply("jpeg", KEY, images, np.array([101.0, 30.0])))
  assert out.dtype == np.uint8 and out.shape == images.shape
  np.testing.assert_array_equal(out[0], images[0])
  assert not np.array_equal(out[1], images[1])
  as_float = degradations.apply_float("jpeg", KEY, images / 255.0, np.array([101.0, 30.0]))
  np.testing.assert_allclose(np.asarray(as_float) * 255.0, out, atol=1e-3)


# ---------------------------------------------------------------- composition


def test_apply_sequence_applies_steps_in_order_with_one_key_per_step():
  images = np.random.default_rng(3).integers(0, 256, (16, 32, 32, 3)).astype(np.uint8)
  steps = [("blur", 1.0), ("awgn", np.full(len(images), 10.0)), ("sapn", 0.05)]
  out = degradations.apply_sequence(KEY, images, steps)
  expected = images
  for step_key, (name, levels) in zip(jax.random.split(KEY, 3), steps):
    expected = degradations.apply(name, step_key, expected, levels)
  np.testing.assert_array_equal(out, expected)
  np.testing.assert_array_equal(degradations.compose(*steps)(KEY, images), expected)
  np.testing.assert_array_equal(degradations.apply_sequence(KEY, images, []), images)


# ---------------------------------------------------------------- errors


def test_bad_inputs_raise_errors_naming_the_value():
  images = synthetic_images()[:2]
  with pytest.raises(ValueError, match=r"'gauss'.*valid names.*blur"):
    degradations.apply("gauss", KEY, images, 1.0)
  with pytest.raises(ValueError, match=r"5\.5"):
    degradations.apply("blur", KEY, images, np.array([1.0, 5.5]))
  with pytest.raises(ValueError, match=r"-1\.0"):
    degradations.apply("awgn", KEY, images, -1.0)
  with pytest.raises(ValueError, match=r"0\.0"):
    degradations.apply("jpeg", KEY, images, 0.0)
  with pytest.raises(ValueError, match="nan"):
    degradations.apply("sapn", KEY, images, float("nan"))
  with pytest.raises(TypeError, match="float32"):
    degradations.apply("blur", KEY, images.astype(np.float32), 1.0)
  with pytest.raises(TypeError, match="uint8"):
    degradations.apply_float("blur", KEY, images, 1.0)
  with pytest.raises(ValueError, match=r"rank 3"):
    degradations.apply("blur", KEY, images[0], 1.0)
  with pytest.raises(ValueError, match=r"got 4"):
    degradations.apply("blur", KEY, np.zeros((2, 8, 8, 4), np.uint8), 1.0)
  with pytest.raises(ValueError, match=r"\[2\].*\(3,\)"):
    degradations.apply("blur", KEY, images, np.ones(3))


def test_inside_jit_levels_are_not_range_checked():
  images = synthetic_images()[:2]
  out = jax.jit(lambda s: degradations.apply("awgn", KEY, images, s))(jnp.array([60.0, 0.0]))
  assert out.shape == images.shape


# ---------------------------------------------------------------- the PNG grid command


def test_grid_command_writes_one_row_per_degradation(tmp_path):
  from fdjax.degradations import grid  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(grid.column_levels("jpeg"), [101, 76, 51, 26, 1])
  out = tmp_path / "grid.png"
  # 16 columns: the [16, 32, 32, 3] batch shape the tests above already compiled
  grid.main(["--out", str(out), "--source", "synthetic", "--names", "blur,sapn", "--columns", "16"])
  with Image.open(out) as image:
    assert image.size[1] == 2 * (32 * 4 + 14 + 4)  # two rows of 128 px cells + captions
  # A grid with fewer points than columns (sr: x1..x4) fills its row's first cells; the
  # others stay white. It failed on a batch of `columns` images for 4 levels.
  np.testing.assert_array_equal(grid.column_levels("sr", 5), [1, 2, 3, 4])
  grid.main(["--out", str(out), "--source", "synthetic", "--names", "sr", "--columns", "5"])
  with Image.open(out) as image:
    cells = np.asarray(image.convert("L"))[:128, 84:]
  filled = [cells[:, c * 132:c * 132 + 128].min() < 255 for c in range(5)]
  assert filled == [True, True, True, True, False]


def test_grid_command_names_a_bad_degradation_or_image_in_one_line(tmp_path, capsys):
  from fdjax.degradations import grid  # pylint: disable=g-import-not-at-top
  for args, message in ((["--names", "bogus"], "error: unknown degradation 'bogus'"),
                        (["--image", str(tmp_path / "none.png")], "No such file")):
    with pytest.raises(SystemExit) as info:   # a traceback and exit status 1 before
      grid.main(["--out", str(tmp_path / "grid.png"), *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_awgn_on_float_images_has_sigma_in_255_units_and_independent_halves():
  # apply_float takes images in 0..1 and sigma in 0..255 units: sigma 25 is 25/255 there.
  grey = jnp.full((2, 32, 32, 3), 0.5, jnp.float32)
  noisy = np.asarray(degradations.apply_float("awgn", jax.random.key(0), grey,
                                              jnp.array([25.0, 10.0])), np.float64)
  noise = (noisy - 0.5).reshape(2, -1)
  np.testing.assert_allclose(noise.std(axis=1), [25 / 255, 10 / 255], rtol=0.05)
  # The two halves of an image's values take their normals from the two output words of
  # one counter: independent, not one half repeated (correlation ~ 0, |r| < 4/sqrt(n)).
  half = noise.shape[1] // 2
  r = np.corrcoef(noise[0, :half], noise[0, half:2 * half])[0, 1]
  assert abs(r) < 4 / math.sqrt(half), r
  assert not np.allclose(noise[0, :half], noise[0, half:2 * half])


def test_a_level_range_is_sampled_inside_the_range_only():
  from fdjax.degradations.plan import LevelPlan

  plan = LevelPlan(("blur", "awgn"), ranges=(("blur", 1.0, 2.0),))
  levels = np.asarray(plan.sample("blur", jax.random.key(1), 512))
  grid = np.asarray(degradations.REGISTRY["blur"].grid)
  in_range = grid[(grid >= 1.0) & (grid <= 2.0)]
  assert {round(float(x), 4) for x in levels} == {round(float(x), 4) for x in in_range}
  awgn = np.asarray(plan.sample("awgn", jax.random.key(1), 512))
  assert awgn.min() == 0 and awgn.max() == max(degradations.REGISTRY["awgn"].grid)
