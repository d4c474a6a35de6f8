"""Whole-image inference: reflect padding to the stride against numpy, tiled inference
against whole-image inference for a translation-equivariant network, batching by size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax.eval import inference

KERNEL = np.random.default_rng(0).normal(size=(3, 3, 3, 2)).astype(np.float32)


@jax.jit
def conv3x3(x):
  """A fixed 3x3 convolution with zero 'SAME' padding (3 -> 2 channels): translation
  equivariant with receptive-field radius 1."""
  return jax.lax.conv_general_dilated(jnp.asarray(x, jnp.float32), KERNEL, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      precision="highest")


@pytest.mark.parametrize("shape,multiple", [((2, 5, 7, 3), 4), ((1, 3, 1, 3), 8),
                                            ((6, 8, 3), 4)])
def test_pad_to_multiple_is_numpys_bottom_right_reflect_and_crops_back(shape, multiple):
  images = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
  padded = np.asarray(inference.pad_to_multiple(images, multiple))
  h, w = shape[-3:-1]
  ph, pw = -(-h // multiple) * multiple - h, -(-w // multiple) * multiple - w
  widths = [(0, 0)] * (len(shape) - 3) + [(0, ph), (0, pw), (0, 0)]
  np.testing.assert_array_equal(padded, np.pad(images, widths, mode="reflect"))
  assert padded.shape[-3] % multiple == 0 and padded.shape[-2] % multiple == 0
  np.testing.assert_array_equal(np.asarray(inference.crop_to(padded, h, w)), images)
  np.testing.assert_array_equal(
      np.asarray(inference.apply_padded(lambda x: x + 1, images.astype(np.int32), multiple)),
      images.astype(np.int32) + 1)


def test_tile_offsets_cover_the_image_with_the_overlap():
  assert inference.tile_starts(10, 16, 4) == [0]
  assert inference.tile_starts(37, 16, 6) == [0, 10, 20, 21]
  assert inference.tile_starts(40, 16, 6, align=4) == [0, 8, 16, 24]
  for length, tile, overlap in [(37, 16, 6), (100, 32, 8), (33, 32, 0)]:
    starts = inference.tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert all(a + tile - b >= overlap for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("tile,multiple", [(16, 1), ((13, 16), 4)])
def test_tiled_equals_whole_image_for_a_translation_equivariant_network(tile, multiple):
  images = np.random.default_rng(2).random((2, 37, 45, 3)).astype(np.float32)
  whole = np.asarray(inference.apply_padded(conv3x3, images, multiple))
  tiled = inference.apply_tiled(conv3x3, images, tile=tile, overlap=6, margin=1,
                                multiple=multiple, tile_batch=8)
  assert tiled.shape == (2, 37, 45, 2) and tiled.dtype == np.float32
  np.testing.assert_allclose(tiled, whole, atol=1e-5)
  # Without a margin, outputs at interior tile edges saw padding: they differ.
  plain = inference.apply_tiled(conv3x3, images, tile=tile, overlap=6, margin=0,
                                multiple=multiple)
  assert np.abs(plain - whole).max() > 1e-3


def test_tiled_single_image_and_image_smaller_than_a_tile():
  image = np.random.default_rng(3).random((9, 11, 3)).astype(np.float32)
  out = inference.apply_tiled(conv3x3, image, tile=32, overlap=4)
  np.testing.assert_allclose(out, np.asarray(conv3x3(image[None]))[0], atol=1e-6)
  with pytest.raises(ValueError, match="margin"):
    inference.apply_tiled(conv3x3, image, tile=8, overlap=4, margin=3)
  with pytest.raises(ValueError, match="overlap < tile"):
    inference.apply_tiled(conv3x3, image, tile=4, overlap=4)


def test_map_by_size_batches_equal_sizes_and_keeps_the_order():
  rng = np.random.default_rng(4)
  images = [rng.random(s).astype(np.float32) for s in
            [(4, 6, 3), (6, 4, 3), (4, 6, 3), (4, 6, 3), (5, 5, 3)]]
  seen = []

  def fn(x):
    seen.append(x.shape)
    return x * 2

  outputs = inference.map_by_size(fn, images, batch_size=2)
  for image, out in zip(images, outputs):
    np.testing.assert_array_equal(out, image * 2)
  assert sorted(seen) == sorted([(2, 4, 6, 3), (2, 4, 6, 3), (2, 6, 4, 3), (2, 5, 5, 3)])
