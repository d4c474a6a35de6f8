"""fdjax.data.augment against numpy references: flip, shared-offset crop, cutout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax.data import augment

B, H, W = 32, 12, 10


def images(dtype, seed=0, channels=3):
  """Random images with values 1..255 (no zeros, so cutout holes are identifiable)."""
  x = np.random.default_rng(seed).integers(1, 256, (B, H, W, channels))
  return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_random_flip_matches_np_flip(dtype):
  x = images(dtype)
  y = augment.random_flip(jax.random.PRNGKey(0), x)
  assert y.dtype == dtype and y.shape == x.shape
  y = np.asarray(y)
  flipped = [np.array_equal(y[i], np.flip(x[i], axis=1)) for i in range(B)]
  kept = [np.array_equal(y[i], x[i]) for i in range(B)]
  assert all(f != k for f, k in zip(flipped, kept))  # each image exactly one of the two
  assert 0 < sum(flipped) < B


def test_flip_rate_is_one_half():
  x = jnp.asarray(images(np.uint8))
  y = augment.random_flip(jax.random.PRNGKey(1), jnp.tile(x, (64, 1, 1, 1)))
  rate = np.mean(np.any(np.asarray(y) != np.tile(x, (64, 1, 1, 1)), axis=(1, 2, 3)))
  assert abs(rate - 0.5) < 0.05  # 2048 draws: 4.5 standard deviations


def np_crop_offsets(view, out, pad):
  """All (dy, dx) for which the numpy zero-pad-and-crop of ``view`` equals ``out``."""
  padded = np.pad(view, ((pad, pad), (pad, pad), (0, 0)))
  return [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
          if np.array_equal(padded[dy:dy + H, dx:dx + W], out)]


@pytest.mark.parametrize("pad", [4, 2])
def test_random_crop_shares_offsets_across_views(pad):
  clean, degraded = images(np.float32, 1), images(np.uint8, 2, channels=1)
  out_clean, out_degraded = augment.random_crop(jax.random.PRNGKey(3), clean, degraded, pad=pad)
  assert out_clean.dtype == np.float32 and out_clean.shape == clean.shape
  assert out_degraded.dtype == np.uint8 and out_degraded.shape == degraded.shape
  offsets = []
  for i in range(B):
    found = np_crop_offsets(clean[i], np.asarray(out_clean[i]), pad)
    assert len(found) == 1  # random values: exactly one offset reproduces the crop
    dy, dx = found[0]
    assert found == np_crop_offsets(degraded[i], np.asarray(out_degraded[i]), pad)
    offsets.append((dy, dx))
  assert len(set(offsets)) > B // 4  # offsets differ per image
  single = augment.random_crop(jax.random.PRNGKey(3), clean, pad=pad)
  assert isinstance(single, tuple) and len(single) == 1
  np.testing.assert_array_equal(single[0], out_clean)


def test_random_crop_offsets_cover_range():
  x = np.arange(64 * H * W, dtype=np.float32).reshape(64, H, W, 1) + 1
  (y,) = augment.random_crop(jax.random.PRNGKey(0), x, pad=4)
  offsets = {np_crop_offsets(x[i], np.asarray(y[i]), 4)[0] for i in range(64)}
  # Both axes over the whole 0..2*pad range (the key is fixed: deterministic). An `or
  # len(offsets) > 30` here passed a crop that never shifted down by more than pad.
  assert {dy for dy, _ in offsets} == set(range(9)) and {dx for _, dx in offsets} == set(range(9))


def test_random_crop_pad_zero_and_errors():
  x = images(np.uint8)
  (y,) = augment.random_crop(jax.random.PRNGKey(0), x, pad=0)
  np.testing.assert_array_equal(y, x)
  with pytest.raises(ValueError, match="views must share"):
    augment.random_crop(jax.random.PRNGKey(0), x, x[:, :-1])
  with pytest.raises(ValueError, match="at least one view"):
    augment.random_crop(jax.random.PRNGKey(0))


def np_cutout_boxes(size, h):
  """Every clipped interval [max(c - size//2, 0), min(c + size//2, h)) for c in 0..h-1."""
  return {(max(c - size // 2, 0), min(c + size // 2, h)) for c in range(h)}


@pytest.mark.parametrize("dtype,size", [(np.uint8, 16), (np.float32, 6), (np.uint8, 5)])
def test_cutout_zeroes_exactly_one_clipped_square(dtype, size):
  x = images(dtype)
  y = np.asarray(augment.cutout(jax.random.PRNGKey(4), x, size=size))
  assert y.dtype == dtype and y.shape == x.shape
  for i in range(B):
    hole = y[i] == 0
    assert (hole == hole[..., :1]).all()  # all channels together
    rows, cols = np.flatnonzero(hole[..., 0].any(1)), np.flatnonzero(hole[..., 0].any(0))
    box_y, box_x = (rows[0], rows[-1] + 1), (cols[0], cols[-1] + 1)
    assert box_y in np_cutout_boxes(size, H) and box_x in np_cutout_boxes(size, W)
    expect = x[i].copy()
    expect[box_y[0]:box_y[1], box_x[0]:box_x[1]] = 0
    np.testing.assert_array_equal(y[i], expect)


def test_augmentations_jit_and_match_eager():
  x = jnp.asarray(images(np.uint8))
  key = jax.random.PRNGKey(5)

  def pipeline(key, x):
    k1, k2, k3 = jax.random.split(key, 3)
    x = augment.random_flip(k1, x)
    clean, degraded = augment.random_crop(k2, x, x // 2, pad=4)
    return clean, augment.cutout(k3, degraded, size=16)

  jitted = jax.jit(pipeline)(key, x)
  eager = pipeline(key, x)
  for a, b in zip(jitted, eager):
    assert a.dtype == jnp.uint8 and a.shape == x.shape
    np.testing.assert_array_equal(a, b)
  assert jax.jit(pipeline).lower(key, x).compile() is not None


def test_the_cutout_hole_is_the_references_zero_after_normalisation():
  # The reference normalises, then multiplies by the cutout mask: the hole is 0 in
  # normalised units. fdjax cuts uint8 views, filled (cutout_fill='mean') with the
  # channel means rounded to uint8: within 0.5/std of 0; 'black' leaves 0 before
  # normalisation (about -1.9 after), as fdjax did before.
  from fdjax.models import CHANNEL_STATS, normalize
  from fdjax.tasks.classification import Augment, ClassificationTask

  x = images(np.uint8)                       # no zeros: the black hole finds the square
  batch = {"image": x, "label": np.zeros(B, np.int32)}
  key = jax.random.PRNGKey(7)
  views = {fill: ClassificationTask("cifar10", Augment(flip=False, crop=False, cutout=True,
                                                       cutout_size=6, cutout_fill=fill))
           .views(key, batch)[0] for fill in ("mean", "black")}
  hole = np.asarray(views["black"]) == 0
  assert hole.any() and (hole == hole[..., :1]).all()
  reference = np.asarray(normalize(x, "cifar10")) * ~hole      # normalise, then mask
  ours = np.asarray(normalize(views["mean"], "cifar10"))
  np.testing.assert_array_equal(ours[~hole], reference[~hole])
  std = np.asarray(CHANNEL_STATS["cifar10"][1])
  assert np.abs(ours - reference).max() <= (0.5 / std).max() + 1e-6
  black = np.asarray(normalize(views["black"], "cifar10"))[hole]
  assert black.max() < -1.7
  with pytest.raises(ValueError, match="augment.cutout_fill must be one of"):
    ClassificationTask("cifar10", Augment(cutout_fill="grey")).views(key, batch)


def test_the_teacher_sees_the_student_s_flip_and_crop():
  # FusionDistill's and ILIAC's teachers see the clean image with the student's own flip
  # and crop: with a degradation that halves the pixels and no cutout, student = teacher // 2.
  from fdjax.tasks import Augment, ClassificationTask

  task = ClassificationTask("unit", Augment(flip=True, crop=True, pad=4, cutout=False))
  images = jnp.asarray(np.random.default_rng(0).integers(1, 256, (8, 16, 16, 3), np.uint8))
  moved = 0
  for seed in range(4):
    student, _, teacher = task.views(jax.random.key(seed), {"image": images, "label": None},
                                     lambda key, x: x // 2)
    np.testing.assert_array_equal(np.asarray(student), np.asarray(teacher) // 2)
    moved += int(np.any(np.asarray(teacher) != np.asarray(images)))
  assert moved == 4   # flips and crops did move the images


def test_cutout_centres_cover_the_image_so_squares_at_an_edge_are_clipped():
  # The authors' centre is uniform over all pixels (not kept size/2 inside): over many
  # images some squares are cut by the border, to sizes 8..15 of a 16-pixel side, and
  # the centres reach the first and last rows.
  x = np.full((400, 32, 32, 1), 7, np.uint8)
  y = np.asarray(augment.cutout(jax.random.PRNGKey(0), x, size=16))
  heights = (y[..., 0] == 0).any(2).sum(1)
  widths = (y[..., 0] == 0).any(1).sum(1)
  assert heights.min() == widths.min() == 8 and heights.max() == 16
  assert ((heights < 16) | (widths < 16)).mean() > 0.5   # a centre within 8 of an edge
