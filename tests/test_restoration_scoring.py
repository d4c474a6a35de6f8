"""Per-task scoring space (``config.scoring``): deraining on the Y channel, another task
on RGB with a shaved border, the clean column on the default; checked against
scikit-image's PSNR / SSIM on a Y channel computed by hand (BT.601 as MATLAB's
rgb2ycbcr), the table's column labels, and the config checks."""

import re

import ml_collections
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from fdjax.data import ImageSet
from fdjax.data.testsets import TestSet
from fdjax.degradations.plan import LevelPlan
from fdjax.errors import ConfigError
from fdjax.eval import levels as levels_lib
from fdjax.eval import report
from fdjax.methods.inputs import identity_predictor
from fdjax.tasks.restoration import RestorationTask
from fdjax.validate import validate_config
from test_restoration_study import load_config


def hand_y(rgb):
  """BT.601 luma in 0..255 units (16..235), float: 16 + (65.481 R + 128.553 G + 24.966 B) / 255."""
  r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
  return 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0


def _pairs(name, seed, n=2, shape=(20, 24)):
  rng = np.random.default_rng(seed)
  target = rng.integers(0, 256, (n, *shape, 3)).astype(np.uint8)
  noisy = np.clip(target + rng.normal(0, 20, target.shape), 0, 255).astype(np.uint8)
  return TestSet(name, (ImageSet.from_fields({"image": noisy, "target": target}),),
                 tuple(f"{name}{i}" for i in range(n)), real=True), noisy, target


def _config(**scoring):
  return ml_collections.ConfigDict({"degradations": "rain,haze",
                                    "restoration": {"shave": 0},
                                    "scoring": {"rain": "", "haze": "", **scoring}})


def test_rain_on_y_haze_on_rgb_shaved_against_scikit_image():
  task = RestorationTask.from_config(_config(rain="y", haze="rgb, shave=2"))
  assert task.scoring == (("rain", True, 0), ("haze", False, 2))
  rain, rainy, clean_rain = _pairs("rain_pairs", 0)
  haze, hazy, clean_haze = _pairs("haze_pairs", 1, n=3, shape=(24, 22))
  plan = LevelPlan(("rain", "haze"))
  results = levels_lib.evaluate_all(task, {}, haze, plan, batch_size=2,
                                    predict=identity_predictor(task),
                                    test_sets={"rain": rain, "haze": haze})
  y_psnr = [peak_signal_noise_ratio(hand_y(t), hand_y(x), data_range=255)
            for t, x in zip(clean_rain, rainy)]
  y_ssim = [structural_similarity(hand_y(t), hand_y(x), data_range=255, gaussian_weights=True,
                                  sigma=1.5, use_sample_covariance=False)
            for t, x in zip(clean_rain, rainy)]
  shaved = [peak_signal_noise_ratio(t[2:-2, 2:-2], x[2:-2, 2:-2], data_range=255)
            for t, x in zip(clean_haze, hazy)]
  rgb = [peak_signal_noise_ratio(t, x, data_range=255) for t, x in zip(clean_haze, hazy)]
  assert results["rain"]["all"] == pytest.approx(np.mean(y_psnr), abs=1e-3)
  assert results["metrics"]["ssim"]["rain"]["all"] == pytest.approx(np.mean(y_ssim), abs=1e-4)
  assert results["haze"]["all"] == pytest.approx(np.mean(shaved), abs=1e-3)
  assert results["clean"] == pytest.approx(np.mean(rgb), abs=1e-3)   # default: RGB
  assert abs(np.mean(y_psnr) - np.mean([peak_signal_noise_ratio(t, x, data_range=255)
                                        for t, x in zip(clean_rain, rainy)])) > 0.1
  assert results["scoring"] == {"clean": "RGB", "rain": "Y", "haze": "RGB, shave 2"}
  table = report.format_table([("Input", 0, results)], metric=task.metric, metrics=task.metrics)
  header = table.splitlines()[0]
  for label in ("clean (RGB)", "rain (rain_pairs, real, Y)",
                "haze (haze_pairs, real, RGB, shave 2)", "SSIM rain (Y)", "| avg |"):
    assert label in header, header
  assert task.metric.label == "PSNR"   # mixed spaces: the columns say which
  # The console's one table per metric: together the combined table's columns, the
  # extra columns with the headline only, every cell as in the combined table.
  extra = {"Input": {"params": 0}}
  whole = report.format_table([("Input", 0, results)], extra=extra, metric=task.metric,
                              metrics=task.metrics)
  parts = [report.format_table([("Input", 0, results)], extra=extra, metric=task.metric,
                               metrics=task.metrics, only=m) for m in task.metrics]
  cells = lambda table, i: [c.strip() for c in table.splitlines()[i].strip("|").split("|")]
  assert cells(parts[0], 0)[-1] == "params" and "params" not in parts[1]
  assert cells(parts[0], 0)[2:-1] == [c for c in cells(whole, 0)[2:] if "SSIM" not in c][:-1]
  assert cells(parts[1], 0)[2:] == [c for c in cells(whole, 0) if c.startswith("SSIM")]
  assert sorted(cells(parts[0], 2)[2:] + cells(parts[1], 2)[2:]) == sorted(cells(whole, 2)[2:])
  record = [("Input", 0, {"scoring": {"clean": "RGB", "denoise": "Y, shave 4"}})]
  assert report.column_label(record, "denoise") == "denoise (Y, shave 4)"
  assert report.column_label(record, "denoise@25") == "denoise@25"   # as its task's column


def test_plain_rgb_scoring_leaves_results_and_labels_unchanged():
  task = RestorationTask.from_config(_config())
  assert task.scoring == () and task.for_degradation("rain") is task
  assert task.scoring_labels(("rain", "haze")) == {}
  uniform = RestorationTask(y_channel=True)
  assert uniform.metric.label == "PSNR (Y)"
  assert uniform.scoring_labels(("rain",)) == {"clean": "Y", "rain": "Y"}


@pytest.mark.parametrize("value,fragment", [
    ({"rain": "yuv"}, "scoring.rain = 'yuv': 'yuv' is not a setting"),
    ({"rain": "y,rgb"}, "'rgb' is not a setting"),
    ({"rain": "shave=-1"}, "'shave=-1' is not a setting"),
    ({"blur": "y"}, "config.scoring sets ['blur'], not evaluated by this study"),
])
def test_scoring_config_errors(value, fragment):
  config = load_config("restoration_quickstart")
  config.scoring.update(value)
  with pytest.raises(ConfigError, match=re.escape(fragment)):
    validate_config(config)
  with pytest.raises(ConfigError, match=re.escape(fragment)):
    RestorationTask.from_config(config)


def test_three_task_config_scores_rain_on_y_only():
  task = RestorationTask.from_config(load_config("restoration_3task", "smoke"))
  assert task.for_degradation("rain").y_channel and not task.y_channel
  assert not task.for_degradation("denoise").y_channel
  assert task.scoring_labels(("denoise", "rain", "haze")) == {
      "clean": "RGB", "denoise": "RGB", "rain": "Y", "haze": "RGB"}
