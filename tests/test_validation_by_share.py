"""Validation per degradation: ``split_scores_by_share`` against numpy's PSNR of each
batch slice, and a combined stage's ``val_psnr/<degradation>`` in metrics.jsonl and
best.json (the best epoch still picked on the mean)."""

import json
import logging
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from fdjax.data import ImageSet
from fdjax.eval.metric import split_scores, split_scores_by_share
from fdjax.study import make_context, stages
from fdjax.tasks import RestorationTask

import test_restoration_study as study_tests

TASK = RestorationTask(patch=None)
SHIFT = (5, 20, 60)   # share i of every batch is brightened by SHIFT[i] levels


def numpy_psnr(a, b):
  mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=(1, 2, 3))
  return 10 * np.log10(255.0 ** 2 / mse)


def predict(variables, images):   # the identity restorer: its output is its input
  return images.astype(jnp.float32)


def brighten_by_share(batch_index, images):   # a stand-in for LevelPlan.combined
  shares = jnp.split(images.astype(jnp.int32), len(SHIFT))
  return jnp.concatenate([jnp.clip(s + d, 0, 255) for s, d in zip(shares, SHIFT)]
                         ).astype(jnp.uint8)


def test_each_share_is_numpy_psnr_of_its_slice_and_the_mean_is_split_scores():
  """9 images in batches of 6 (the last with 3 padding rows), shares of 2: share i
  holds the images at positions 2i and 2i + 1 of each batch (those that exist),
  brightened by SHIFT[i]: images 0, 1, 6, 7 / 2, 3, 8 / 4, 5."""
  rng = np.random.default_rng(0)
  clean = rng.integers(0, 200, (9, 12, 13, 3), dtype=np.uint8)
  split = ImageSet.from_fields({"image": clean, "target": clean})
  overall, per_share = split_scores_by_share(TASK, predict, {}, split, shares=3, batch_size=6,
                                             transform=brighten_by_share)
  share = np.arange(9) % 6 // 2
  psnr = numpy_psnr(np.clip(clean.astype(int) + np.array(SHIFT)[share, None, None, None],
                            0, 255), clean)
  for i in range(3):
    assert per_share[i]["psnr"] == pytest.approx(psnr[share == i].mean(), rel=1e-5)
  assert overall["psnr"] == pytest.approx(psnr.mean(), rel=1e-5)
  assert overall == split_scores(TASK, predict, {}, split, batch_size=6,
                                 transform=brighten_by_share)
  assert sorted(per_share[0]) == ["psnr", "ssim"]
  only = split_scores_by_share(TASK, predict, {}, split, shares=3, batch_size=6,
                               transform=brighten_by_share, metrics=("psnr",))
  assert [list(s) for s in only[1]] == [["psnr"]] * 3


def test_a_share_without_images_is_empty_and_a_bad_split_is_refused():
  clean = np.full((1, 4, 4, 3), 100, np.uint8)
  split = ImageSet.from_fields({"image": clean, "target": clean})
  overall, per_share = split_scores_by_share(TASK, predict, {}, split, shares=3, batch_size=3,
                                             transform=brighten_by_share)
  assert per_share[1:] == [{}, {}]
  assert per_share[0]["psnr"] == pytest.approx(10 * np.log10(255.0 ** 2 / 25), rel=1e-5)
  assert overall["psnr"] == per_share[0]["psnr"]
  with pytest.raises(ValueError, match="does not split into 3"):
    split_scores_by_share(TASK, predict, {}, split, shares=3, batch_size=4)


def test_a_combined_stage_reports_validation_per_degradation(tmp_path, monkeypatch, caplog):
  """The restoration base (one share per degradation): each epoch's record holds
  ``val_psnr/denoise`` and ``val_psnr/haze``, whose mean weighted by their images is
  ``val_psnr``; best.json keeps the chosen epoch's; the console shows each epoch's and
  the chosen one."""
  monkeypatch.setattr(study_tests.restoration_sets, "photos", study_tests.small_photos)
  config = study_tests.tiny()
  config.selection = "val"
  config.clean.epochs = 2
  ctx = make_context(config, str(tmp_path))
  with caplog.at_level(logging.INFO):
    stages.clean_stage(ctx)
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[clean] ")]
  stage_dir = pathlib.Path(ctx.stage_dir("clean"))
  records = [json.loads(line) for line in open(stage_dir / "metrics.jsonl")]
  epochs = [r for r in records if "val_psnr" in r]
  assert [r["epoch"] for r in epochs] == [1, 2]
  # Validation images in batches of 2: position 0 of each batch is denoise, 1 is haze.
  n = len(ctx.dataset.validation)
  counts = {"denoise": (n + 1) // 2, "haze": n // 2}
  assert n >= 2
  for r in epochs:
    mean = sum(counts[t] * r[f"val_psnr/{t}"] for t in counts) / n
    assert r["val_psnr"] == pytest.approx(mean, rel=1e-5)
    assert r["val_psnr/denoise"] != r["val_psnr/haze"]
  best = json.loads((stage_dir / "best.json").read_text())
  chosen = next(r for r in epochs if r["epoch"] == best["epoch"])
  assert {k: best[k] for k in ("val_psnr", "val_psnr/denoise", "val_psnr/haze")} == {
      k: chosen[k] for k in ("val_psnr", "val_psnr/denoise", "val_psnr/haze")}
  assert best["val_psnr"] == max(r["val_psnr"] for r in epochs)
  shown = [f"psnr {r['val_psnr']:.2f} dB (denoise {r['val_psnr/denoise']:.2f}, "
           f"haze {r['val_psnr/haze']:.2f})" for r in epochs]
  assert [l for l in lines if "validation" in l] == [
      f"[clean] epoch 1: validation {shown[0]}, the best so far",
      f"[clean] epoch 2: validation {shown[1]}, "
      + ("the best so far" if best["epoch"] == 2 else "the best is epoch 1"),
      f"[clean] selected epoch {best['epoch']} by validation {shown[best['epoch'] - 1]}"]


def test_shares_over_eight_devices(run_on_eight_cpu_devices):
  """The same numpy reference with batches of 24 split over 8 simulated devices
  (tests/share_scores_sharding_check.py)."""
  run_on_eight_cpu_devices("share_scores_sharding_check.py", "OK shares over 8 devices")
