"""Cue jitter (``restoration.cue_jitter``, ``restoration_views.tile_cue``): in the tile
context, half the training cues raised to a uniform level, never lowered; the cue's own
value from scipy's minimum filter and numpy's quantile, the draws against a uniform law
(scipy's Kolmogorov-Smirnov test), and the config's checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage, stats
from sklearn.datasets import load_sample_images

from fdjax import validate
from fdjax.config_restoration import restoration_config
from fdjax.errors import ConfigError
from fdjax.models.image_prior import DARK_QUANTILE, DARK_WINDOW
from fdjax.tasks import RestorationTask
from fdjax.tasks.restoration_views import CUE_JITTER_RATE

N = 400   # tiles: enough for a 5-sigma band on the share raised (sigma 0.025)


def tiles(black_corner: bool) -> np.ndarray:
  """uint8 ``[N, 32, 32, 3]``: crops of scikit-learn's two photographs brightened to
  128..255 (no dark pixels), optionally with a black 8x8 corner (14x14 once the dark
  channel's window widens it: 19 % of the tile, so its 1 % level is 0)."""
  photos = load_sample_images().images
  rng = np.random.default_rng(0)
  out = np.empty((N, 32, 32, 3), np.uint8)
  for i in range(N):
    photo = photos[i % 2]
    y, x = rng.integers(0, photo.shape[0] - 32), rng.integers(0, photo.shape[1] - 32)
    out[i] = photo[y:y + 32, x:x + 32] // 2 + 128
  if black_corner:
    out[:, :8, :8] = 0
  return out


def own_cue(images: np.ndarray) -> np.ndarray:
  """float ``[N]``, 0..255: the 1 % level of each image's 7x7 dark channel (scipy, numpy)."""
  dark = np.stack([ndimage.minimum_filter(im.min(-1), size=DARK_WINDOW, mode="nearest")
                   for im in images.astype(np.float64)])
  return np.quantile(dark.reshape(len(images), -1), DARK_QUANTILE, axis=1)


def views(images, jitter, seed=0):
  task = RestorationTask(patch=16, image_prior="dark_channel", prior_context="tile",
                         cue_jitter=jitter)
  got, clean, _ = task.views(jax.random.key(seed, impl="rbg"), {"image": jnp.asarray(images)},
                             None)
  got = np.asarray(got)
  cue = got[..., 3]
  assert np.all(cue == cue[:, :1, :1])   # one cue per example, constant over the patch
  return got, np.asarray(clean), cue[:, 0, 0]


def test_half_the_cues_of_a_black_cornered_tile_rise_to_a_uniform_level():
  images = tiles(black_corner=True)
  np.testing.assert_array_equal(own_cue(images), 0.0)
  got, clean, cue = views(images, jitter=50.0)
  raised = cue[cue > 0]
  assert abs(len(raised) / N - CUE_JITTER_RATE) < 0.125
  assert cue.min() >= 0.0 and cue.max() <= 50.0
  assert stats.kstest(raised, stats.uniform(loc=0, scale=50).cdf).pvalue > 1e-3
  # the jitter draws from its own stream: crops, flips and the RGB input are unchanged
  plain, plain_clean, plain_cue = views(images, jitter=0.0)
  np.testing.assert_array_equal(plain_cue, 0.0)
  np.testing.assert_array_equal(got[..., :3], plain[..., :3])
  np.testing.assert_array_equal(clean, plain_clean)


def test_a_cue_is_never_lowered_and_a_raise_is_uniform_above_it():
  images = tiles(black_corner=False)
  reference = own_cue(images)
  assert reference.min() >= 128   # every tile reads like thick haze
  _, _, below = views(images, jitter=100.0)
  np.testing.assert_allclose(below, reference, atol=1e-3)   # a raise under the cue: none
  _, _, cue = views(images, jitter=255.0, seed=1)
  assert np.all(cue >= reference - 1e-3)
  up = cue > reference + 1e-3
  # P(raised) = rate x P(u > cue); given a raise, u is uniform on cue..255
  expected = CUE_JITTER_RATE * np.mean((255.0 - reference) / 255.0)
  assert abs(up.mean() - expected) < 5 * np.sqrt(expected * (1 - expected) / N)
  fraction = (cue[up] - reference[up]) / (255.0 - reference[up])
  assert stats.kstest(fraction, "uniform").pvalue > 1e-3


def test_the_task_reads_cue_jitter_from_the_config():
  config = restoration_config()
  config.restoration.image_prior = "dark_channel"
  config.restoration.prior_context = "tile"
  config.restoration.cue_jitter = 50
  assert RestorationTask.from_config(config).cue_jitter == 50.0
  validate.validate_config(config)


@pytest.mark.parametrize("prior, context, jitter, message", [
    ("dark_channel", "patch", 50, "cue_jitter needs"),
    ("none", "tile", 50, "cue_jitter needs"),
    ("dark_channel", "tile", 300, r"cue_jitter must be a number in 0..255"),
    ("dark_channel", "tile", -1, r"cue_jitter must be a number in 0..255")])
def test_bad_cue_jitter_settings_are_named(prior, context, jitter, message):
  config = restoration_config()
  config.restoration.image_prior = prior
  config.restoration.prior_context = context
  config.restoration.cue_jitter = jitter
  with pytest.raises(ConfigError, match=message):
    validate.validate_config(config)


def test_the_task_refuses_a_jitter_it_could_not_apply():
  with pytest.raises(ConfigError, match="cue_jitter needs an image_prior"):
    RestorationTask(patch=16, image_prior="dark_channel", cue_jitter=10.0)
