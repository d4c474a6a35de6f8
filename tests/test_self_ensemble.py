"""Self-ensemble (fdjax.eval.self_ensemble) against numpy's rotations and flips, and in
the study: a finished run re-evaluated with eval.self_ensemble reuses every stage and
scores the mean over the 8 transforms (or the input and its mirror image), checked
against the model applied by hand."""

import json
import os

import jax
import numpy as np
import pytest

import fdjax
from fdjax import degradations, pipeline
from fdjax.config import base_config
from fdjax.data import restoration_sets
from fdjax.degradations.plan import eval_key
from fdjax.errors import ConfigError
from fdjax.eval.self_ensemble import TRANSFORMS, self_ensemble, transform, untransform
from fdjax.validate import validate_config
from test_restoration_study import small_photos, tiny


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


def test_a_finished_run_re_evaluated_with_the_self_ensemble(tmp_path, monkeypatch):
  monkeypatch.setattr(restoration_sets, "photos", small_photos)
  config = tiny()
  config.methods = "input,modelsoups"
  plain = {row: r for row, _, r in pipeline.run(config, str(tmp_path))}
  stage_files = {p: os.path.getmtime(p) for p in
                 (tmp_path / "seed_0").glob("*/**/variables/*")}
  config.eval.self_ensemble = 8
  # What a write killed hard left in the first run's workdir goes with the next run.
  stale = tmp_path / "seed_0" / "eval" / "input.json.4321.tmp"
  stale.write_text('{"half')
  os.utime(stale, (1e9, 1e9))
  x8 = {row: r for row, _, r in pipeline.run(config, str(tmp_path))}
  assert not stale.exists()
  saved = json.loads((tmp_path / "results.json").read_text())
  markdown = (tmp_path / "results.md").read_text()
  config.eval.self_ensemble = 2
  x2 = {row: r for row, _, r in pipeline.run(config, str(tmp_path))}
  # Every stage reused (no stage file rewritten); an evaluation folder per setting.
  assert stage_files and all(os.path.getmtime(p) == t for p, t in stage_files.items())
  folders = os.listdir(tmp_path / "seed_0" / "eval")
  single = [f for f in folders if "_x" not in f]
  assert len(folders) == 3 and len(single) == 1
  assert {f.replace("_x8", "").replace("_x2", "") for f in folders} == set(single)
  # The Input row is the identity: the same under every transform.
  assert x8["Input"]["denoise"]["all"] == pytest.approx(plain["Input"]["denoise"]["all"],
                                                        abs=1e-4)
  # ModelSoups' PSNR at sigma 25 against the model applied by hand to numpy's transforms
  # of the same noisy image, averaged, scored by numpy: all 8, then 0 and the flip (4).
  flower = small_photos()[1].targets[0]
  noisy = np.asarray(degradations.apply("denoise", eval_key(301, "denoise", 25, 0),
                                        np.stack([flower, np.zeros_like(flower)]), 25.0))[:1]
  loaded = fdjax.load_model(str(tmp_path), "modelsoups")
  outs = [numpy_untransform(np.asarray(loaded.predict(
      np.ascontiguousarray(numpy_transform(noisy, i)))), i) for i in range(TRANSFORMS)]
  psnr = lambda images: 10 * np.log10(255 ** 2 / np.mean(
      (np.mean(np.asarray(images, np.float64), axis=0)[0] - flower) ** 2))
  assert x8["ModelSoups"]["denoise"]["all"] == pytest.approx(psnr(outs), abs=2e-3)
  assert x2["ModelSoups"]["denoise"]["all"] == pytest.approx(psnr([outs[0], outs[4]]), abs=2e-3)
  values = {r["ModelSoups"]["denoise"]["all"] for r in (plain, x8, x2)}
  assert max(values) - min(values) > 1e-3 and len(values) == 3
  # Said in results.md and results.json.
  assert "x8 self-ensemble" in markdown and saved["test_time"].startswith("x8")
  assert "x2 self-ensemble" in (tmp_path / "results.md").read_text()
