"""Self-ensemble (fdjax.eval.self_ensemble) against numpy's rotations and flips. In the
study (tests/test_restoration_study.py, on that module's tiny study): a finished run
re-evaluated with eval.self_ensemble reuses every stage and scores the mean over the 8
transforms (or the input and its mirror image), checked against the model applied by
hand."""

import jax
import numpy as np
import pytest

from fdjax.config import base_config
from fdjax.errors import ConfigError
from fdjax.eval.self_ensemble import TRANSFORMS, self_ensemble, transform, untransform
from fdjax.validate import validate_config
from test_restoration_study import tiny


def numpy_transform(x, i):
  """Symmetry i of ``[B, H, W, C]`` images by numpy alone: i % 4 quarter turns, then a
  left-right flip for i >= 4."""
  out = np.rot90(x, i % 4, axes=(1, 2))
  return out[:, :, ::-1] if i >= 4 else out


def numpy_untransform(y, i):
  out = y[:, :, ::-1] if i >= 4 else y
  return np.rot90(out, -(i % 4), axes=(1, 2))


def test_the_eight_transforms_are_numpys_and_distinct_and_invertible():
  x = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)  # H != W
  seen = set()
  for i in range(TRANSFORMS):
    t = np.asarray(transform(x, i))
    np.testing.assert_array_equal(t, numpy_transform(x, i))
    np.testing.assert_array_equal(np.asarray(untransform(t, i)), x)
    seen.add(t.tobytes() + bytes(t.shape))
  assert len(seen) == TRANSFORMS


def test_self_ensemble_is_the_mean_of_the_transformed_outputs():
  # Not equivariant: adds a ramp along the width of whatever it is given.
  def predict(scale, images):
    w = images.shape[2]
    return images * scale + jax.numpy.arange(w, dtype=np.float32)[None, None, :, None]

  x = np.random.default_rng(1).uniform(0, 255, (2, 4, 6, 3)).astype(np.float32)
  ramp = lambda t: np.arange(t.shape[2], dtype=np.float32)[None, None, :, None]
  by_hand = lambda i: numpy_untransform(numpy_transform(x, i) * 2 + ramp(numpy_transform(x, i)), i)
  got = np.asarray(jax.jit(self_ensemble(predict, 8))(2.0, x))
  np.testing.assert_allclose(got, np.mean([by_hand(i) for i in range(TRANSFORMS)], axis=0),
                             rtol=1e-6, atol=1e-5)
  assert not np.allclose(got, x * 2 + ramp(x))   # the ramp is averaged over orientations
  # x2: the input and its left-right mirror image; the ramp's mean over both is flat.
  got2 = np.asarray(jax.jit(self_ensemble(predict, 2))(2.0, x))
  np.testing.assert_allclose(got2, (by_hand(0) + by_hand(4)) / 2, rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(got2, x * 2 + (x.shape[2] - 1) / 2, rtol=1e-6, atol=1e-4)
  with pytest.raises(ValueError, match="0 \\(none\\), 2 .* or 8"):
    self_ensemble(predict, 4)
  # A pointwise (equivariant) predictor comes back unchanged.
  pointwise = lambda v, images: images * v + 1.0
  np.testing.assert_allclose(np.asarray(self_ensemble(pointwise)(3.0, x)), x * 3 + 1,
                             rtol=1e-6)
  assert self_ensemble(pointwise) is self_ensemble(pointwise)   # memoised: one jit


def test_self_ensemble_config_is_checked():
  config = base_config()   # classification
  config.eval.self_ensemble = 8
  with pytest.raises(ConfigError, match="does not output images"):
    validate_config(config, device_count=1)
  config = tiny()
  config.eval.self_ensemble = 4
  with pytest.raises(ConfigError, match="eval.self_ensemble must be 0 .none., 2 .* or 8"):
    validate_config(config, device_count=1)


# The study re-evaluated with the self-ensemble (a finished run, every stage reused) is
# tests/test_restoration_study.py::test_a_finished_run_re_evaluated_with_the_self_ensemble:
# it reuses that module's tiny study instead of training the same stages again.
