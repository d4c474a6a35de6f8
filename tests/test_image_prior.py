"""The dark-channel image cue (``fdjax.models.image_prior``, ``restoration.image_prior``):
against scipy's minimum filter and numpy's quantile on real photographs, its closed form
under the scattering model and under thin streaks, how it reaches the restorers, and the
cue of a whole training tile given with its patch (``restoration.prior_context``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from sklearn.datasets import load_sample_images

from fdjax import validate
from fdjax.config_restoration import restoration_config
from fdjax.errors import ConfigError
from fdjax.models import UNet
from fdjax.models.image_prior import (DARK_QUANTILE, DARK_WINDOW, attach_cue, dark_channel,
                                      dark_channel_level, image_cue, with_image_prior)
from fdjax.tasks import RestorationTask
from fdjax.train.objectives import supervised_loss
from random_weights import random_variables


def photos():
  """Two real photographs (scikit-learn's), 0..1, cropped to 96x128 at two places."""
  images = load_sample_images().images
  return np.stack([images[0][100:196, 200:328], images[1][150:246, 300:428]]) / 255.0


def test_dark_channel_is_scipys_minimum_filter_of_the_channel_minimum():
  x = photos()
  reference = np.stack([ndimage.minimum_filter(im.min(-1), size=DARK_WINDOW, mode="nearest")
                        for im in x])
  got = np.asarray(dark_channel(jnp.asarray(x, jnp.float32)))[..., 0]
  np.testing.assert_allclose(got, reference, atol=1e-7)
  level = np.asarray(dark_channel_level(jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(level, np.quantile(reference.reshape(2, -1), DARK_QUANTILE,
                                                axis=1), atol=1e-6)


@pytest.mark.parametrize("quantile", [0.0, 0.37, 1.0])
@pytest.mark.parametrize("source", ["photos", "uniform"])
def test_level_interpolates_order_statistics_as_numpy_at_any_quantile(quantile, source):
  # Photos (8-bit: neighbouring order statistics often tie) and continuous values (no
  # ties: the interpolation position itself is checked).
  x = photos() if source == "photos" else np.random.default_rng(0).uniform(0, 255,
                                                                          (2, 17, 23, 3))
  reference = np.stack([ndimage.minimum_filter(im.min(-1), size=3, mode="nearest")
                        for im in x])
  got = np.asarray(dark_channel_level(jnp.asarray(x, jnp.float32), quantile, window=3))
  np.testing.assert_allclose(got, np.quantile(reference.reshape(2, -1), quantile, axis=1),
                             atol=1e-6)


def test_haze_lifts_the_level_to_the_airlight_share_and_thin_streaks_do_not():
  # A scene with a black 16x16 corner (> 1 % of 64x64 pixels): level 0. Hazed with
  # transmission t and airlight A: every pixel J t + A (1 - t), so the black pixels
  # become A (1 - t) and the level is that. Bright 2-pixel-wide streaks (thinner than
  # the window) leave every window's minimum, hence the level, where it was.
  scene = np.full((1, 64, 64, 3), 0.6)
  scene[:, 48:, 48:] = 0.0
  scene[:, :, 10:40, 1] = 0.3
  t, airlight = 0.55, 0.9
  hazy = scene * t + airlight * (1 - t)
  streaky = scene.copy()
  for start in range(0, 64, 8):
    streaky[:, :, start:start + 2] = 1.0
  level = lambda x: float(dark_channel_level(jnp.asarray(x, jnp.float32))[0])
  assert level(scene) == 0.0 and level(streaky) == 0.0
  assert level(hazy) == pytest.approx(airlight * (1 - t), abs=1e-6)


def test_the_cue_is_a_constant_fourth_channel_and_none_is_the_identity():
  x = jnp.asarray(photos(), jnp.float32)
  assert with_image_prior(x, "none") is x
  cued = np.asarray(with_image_prior(x, "dark_channel"))
  assert cued.shape == (2, 96, 128, 4)
  np.testing.assert_array_equal(cued[..., :3], np.asarray(x))
  for i, level in enumerate(np.asarray(dark_channel_level(x))):
    np.testing.assert_array_equal(cued[i, ..., 3], np.full((96, 128), level, np.float32))
  with pytest.raises(ValueError, match="unknown image prior 'bright'"):
    with_image_prior(x, "bright")


def test_a_far_away_change_of_the_level_reaches_a_distant_output_pixel_only_with_the_cue():
  # Raising the black corner (bottom right) lifts the image's level; the top-left
  # output pixel lies outside the corner's receptive field, so only the image-level
  # cue can carry the change there.
  scene = np.full((1, 32, 32, 3), 0.5, np.float32)
  scene[:, 24:, 24:] = 0.0
  lifted = scene.copy()
  lifted[:, 24:, 24:] = 0.4
  for prior, moves in (("none", False), ("dark_channel", True)):
    model = UNet(width=4, depth=1, image_prior=prior)
    variables = random_variables(model, 0, (32, 32, 3))
    out = [np.asarray(model.apply(variables, jnp.asarray(s))[0])[0, 0, 0] for s in
           (scene, lifted)]
    assert (np.abs(out[0] - out[1]).max() > 1e-4) == moves, prior


def test_the_cue_channel_of_the_intro_convolution_learns():
  model = UNet(width=4, depth=1, image_prior="dark_channel")
  variables = random_variables(model, 1, (16, 16, 3))
  assert variables["params"]["intro"]["kernel"].shape == (3, 3, 4, 4)
  task = RestorationTask(patch=None, flip=False, rot90=False)
  hazy = lambda key, images: (images.astype(jnp.float32) * 0.5 + 120).astype(jnp.uint8)
  loss_fn = supervised_loss(model, task, hazy)
  images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, {}, {"image": jnp.asarray(images)},
                                             jax.random.key(0, impl="rbg"))[0]))(
      variables["params"])
  assert np.any(np.asarray(grads["intro"]["kernel"][:, :, 3, :]))


@pytest.mark.parametrize("field, bad, known", [
    ("image_prior", "bright", r"\('none', 'dark_channel'\)"),
    ("prior_context", "image", r"\('patch', 'tile'\)")])
def test_config_names_the_known_priors_and_contexts(field, bad, known):
  config = restoration_config()
  config.restoration[field] = bad
  with pytest.raises(ConfigError, match=rf"restoration.{field} must be one of {known}, "
                                        rf"got '{bad}'"):
    validate.validate_config(config)


def _lift(key, images):
  """A deterministic per-pixel 'haze' (uint8 -> uint8): 0.5 x + 100."""
  del key
  return (images.astype(jnp.float32) * 0.5 + 100).astype(jnp.uint8)


def test_tile_context_cue_is_the_degraded_tiles_level_and_crops_stay_aligned():
  # Four real photographs' crops brightened to 128..255, each with a black 12x12 corner:
  # the whole tile's level is the black lifted by the degradation (100; the 18x18
  # window-widened corner is 3.5 % of the tile's pixels), a 32x32 patch missing the
  # corner would read at least 164.
  tiles = np.concatenate([photos(), photos()[:, ::-1]])[:, :, :96] * 127 + 128
  tiles = tiles.astype(np.uint8)
  tiles[:, -12:, -12:] = 0
  task = RestorationTask(patch=32, image_prior="dark_channel", prior_context="tile")
  got, clean, teacher = task.views(jax.random.key(3, impl="rbg"), {"image": jnp.asarray(tiles)},
                                   _lift)
  assert got.shape == (4, 32, 32, 4) and got.dtype == jnp.float32 and teacher is got
  degraded = np.floor(tiles * 0.5 + 100) / 255.0
  dark = np.stack([ndimage.minimum_filter(im.min(-1), size=DARK_WINDOW, mode="nearest")
                   for im in degraded])
  reference = np.quantile(dark.reshape(4, -1), DARK_QUANTILE, axis=1) * 255.0
  np.testing.assert_allclose(reference, 100.0, atol=1e-4)
  np.testing.assert_allclose(np.asarray(got)[..., 3],
                             np.broadcast_to(reference[:, None, None], (4, 32, 32)), atol=1e-3)
  # the degradation is per pixel, so the crop of the degraded tile is the degraded crop
  np.testing.assert_array_equal(np.asarray(got)[..., :3],
                                np.floor(np.asarray(clean) * 0.5 + 100))
  patch_task = RestorationTask(patch=32, image_prior="dark_channel")
  plain, _, _ = patch_task.views(jax.random.key(3, impl="rbg"),
                                 {"image": jnp.asarray(tiles)}, _lift)
  assert plain.shape == (4, 32, 32, 3) and plain.dtype == jnp.uint8


def test_a_given_cue_is_used_as_is_and_equals_computing_it_from_the_whole_image():
  model = UNet(width=4, depth=1, image_prior="dark_channel")
  x = jnp.asarray(photos(), jnp.float32)
  variables = random_variables(model, 2, (96, 128, 3))
  computed = np.asarray(model.apply(variables, x)[0])
  given = np.asarray(model.apply(variables, attach_cue(x, image_cue(x, "dark_channel")))[0])
  np.testing.assert_allclose(given, computed, atol=1e-6)
  assert given.shape == (2, 96, 128, 3)
  other = np.asarray(model.apply(variables, attach_cue(x, jnp.full((2, 1), 0.9)))[0])
  assert np.abs(other - computed).max() > 1e-4   # the given value is what the model sees
  with pytest.raises(ValueError, match=r"expects images \[B, H, W, 3\] or \[B, H, W, 4\]"):
    model.apply(variables, jnp.zeros((1, 8, 8, 5)))


def test_tiled_inference_gives_every_tile_the_whole_images_cue(monkeypatch):
  from fdjax import predictor
  model = UNet(width=4, depth=1, image_prior="dark_channel")
  variables = random_variables(model, 4, (32, 32, 3))
  kernel = variables["params"]["intro"]["kernel"]
  variables["params"]["intro"]["kernel"] = kernel.at[:, :, 3, :].multiply(50.0)
  # A bright photograph with one black corner: the whole image's level is 0, a tile
  # away from the corner reads at least 128.
  image = (photos()[0, :64, :96] * 127 + 128).astype(np.uint8)
  image[-12:, -12:] = 0
  task = RestorationTask(patch=None)
  whole = predictor.image_restorer(task, model, variables, tiling=None)(image)
  # margin 12 >= the tiny U-Net's receptive-field radius: tiles give the whole result
  tiling = predictor.Tiling(max_pixels=32 * 32, tile=40, overlap=24, margin=12)
  tiled = predictor.image_restorer(task, model, variables, tiling)(image)
  assert np.abs(tiled.astype(int) - whole).max() <= 1
  monkeypatch.setattr(predictor, "with_cue", lambda images, prior: images)
  own_cue = predictor.image_restorer(task, model, variables, tiling)(image)
  assert np.abs(own_cue.astype(int) - whole).max() > 8   # each tile's own cue differs


def test_a_model_pooling_over_its_input_warns_once_when_it_tiles_and_differs(monkeypatch):
  """NAFNet's channel attention pools each block over its whole input: with the margin
  that makes the plain U-Net's tiles exact, its tiles still differ from the whole image,
  and the first tiled image says so (once); the plain U-Net tiles without a word."""
  from fdjax import models, predictor
  warnings = []
  monkeypatch.setattr(predictor.logging, "warning",
                      lambda fmt, *a: warnings.append(str(fmt) % a))
  image = (photos()[0, :64, :96] * 127 + 128).astype(np.uint8)
  task = RestorationTask(patch=None)
  tiling = predictor.Tiling(max_pixels=32 * 32, tile=40, overlap=24, margin=12)
  for model, pools in ((UNet(width=4, depth=1), False),
                       (models.NAFNet(width=4, depth=1), True)):
    assert model.pools_globally is pools
    variables = random_variables(model, 6, (32, 32, 3))
    whole = predictor.image_restorer(task, model, variables, tiling=None)(image)
    restore = predictor.image_restorer(task, model, variables, tiling)
    tiled = restore(image)
    restore(image)
    gap = np.abs(tiled.astype(int) - whole).max()
    assert bool(gap > 1) == pools, gap
    assert len(warnings) == int(pools)
  assert warnings[0].startswith("NAFNet pools over its whole input: an image above 1024 "
                                "pixels runs as tiles")
  from fdjax.moe.unet_student import RoutedUNet
  assert models.PromptIR().pools_globally and models.MEASNet().pools_globally
  assert RoutedUNet().pools_globally


def test_a_whole_image_padded_to_the_stride_gets_the_cue_of_the_image_not_of_its_padding():
  # 70 x 100 pads to 72 x 100 (stride 4): the reflected rows carry the black stripe's
  # dark channel over the 1% quantile (0.50 -> 0); the cue is the unpadded image's (scipy
  # and numpy below), given to the model as its fourth channel.
  model = UNet(width=4, depth=2, image_prior="dark_channel")
  variables = random_variables(model, 5, (32, 32, 3))
  kernel = variables["params"]["intro"]["kernel"]
  variables["params"]["intro"]["kernel"] = kernel.at[:, :, 3, :].multiply(50.0)
  image = (photos()[0, :70, :100] * 127 + 128).astype(np.uint8)
  image[-1:, -11:] = 0     # one black row of 11: under 1% of the dark channel, not padded
  dark = ndimage.minimum_filter(image.min(-1) / 255.0, size=DARK_WINDOW, mode="nearest")
  level = np.quantile(dark, DARK_QUANTILE)
  padded = np.pad(image / 255.0, ((0, 2), (0, 0), (0, 0)), mode="reflect")
  padded_level = np.quantile(ndimage.minimum_filter(padded.min(-1), size=DARK_WINDOW,
                                                    mode="nearest"), DARK_QUANTILE)
  assert abs(level - padded_level) > 0.05                # the padding would move it
  task = RestorationTask(patch=None)
  got = np.asarray(task.forward(model, variables, jnp.asarray(image[None]))[0])
  given = np.concatenate([padded, np.full(padded.shape[:2] + (1,), level)], -1)
  want = np.asarray(model.apply(variables, jnp.asarray(given[None], jnp.float32))[0])
  np.testing.assert_allclose(got, want[:, :70], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("prior_context", ["patch", "tile"])
def test_a_degradation_with_a_direction_keeps_it_through_flips_and_rotations(prior_context):
  # 'Haze' thickening up the rows (as haze_float's depth ramp): in every training input
  # the added light must fall from the top row down, whatever flip or rotation the
  # view drew; the flips and rotations act on the scene before it is degraded.
  def ramp(key, images):
    del key
    rows = jnp.arange(images.shape[1], dtype=jnp.float32)[None, :, None, None]
    return (images.astype(jnp.float32) * 0.5 + 120 - rows).astype(jnp.uint8)

  tiles = (np.concatenate([photos(), photos()[:, ::-1]])[:, :, :96] * 127).astype(np.uint8)
  task = RestorationTask(patch=32, image_prior="dark_channel", prior_context=prior_context)
  for seed in range(4):
    got, clean, _ = task.views(jax.random.key(seed, impl="rbg"),
                               {"image": jnp.asarray(tiles)}, ramp)
    light = np.asarray(got)[..., :3] - np.floor(np.asarray(clean) * 0.5)   # 120 - row
    along_rows = np.diff(light.mean(axis=(2, 3)), axis=1)
    along_columns = np.diff(light.mean(axis=(1, 3)), axis=1)
    np.testing.assert_allclose(along_rows, -1.0, atol=0.1)
    np.testing.assert_allclose(along_columns, 0.0, atol=0.1)
