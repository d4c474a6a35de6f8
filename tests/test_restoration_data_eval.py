"""Restoration data and evaluation: the 'denoise' degradation's statistics, per-task test
sets (synthetic at explicit levels, real pairs as they are, images of several sizes)
scored against numpy PSNR and scikit-image SSIM, mixed real/synthetic training views,
and the photos source."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from fdjax import degradations
from fdjax.data import ImageSet
from fdjax.data.splits import Dataset
from fdjax.data.testsets import TestSet
from fdjax.degradations.plan import LevelPlan, eval_key
from fdjax.eval import levels as levels_lib
from fdjax.methods.inputs import identity_predictor
from fdjax.study.runner import Stage
from fdjax.tasks.restoration import RestorationTask

TASK = RestorationTask(patch=None, flip=False, rot90=False)


def np_psnr(a, b):
  mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
  return 10 * np.log10(255.0 ** 2 / mse)


def test_denoise_adds_float_noise_of_std_sigma_then_truncates():
  grey = np.full((2, 128, 128, 3), 128, np.uint8)
  key = jax.random.PRNGKey(3)
  for sigma in (15.0, 25.0, 50.0):
    noisy = np.asarray(degradations.apply("denoise", key, grey, sigma), np.float64)
    diff = noisy - 128.0
    # floor(128 + sigma z) - 128: std sqrt(sigma^2 + 1/12), mean -0.5 (truncation)
    assert diff.std() == pytest.approx(np.sqrt(sigma ** 2 + 1 / 12), rel=0.02)
    assert diff.mean() == pytest.approx(-0.5, abs=0.15 + sigma / 128 / 10)
  assert np.array_equal(degradations.apply("denoise", key, grey, 0.0), grey)
  dark = np.zeros((1, 64, 64, 3), np.uint8)  # clipped at 0: nothing below black
  assert np.asarray(degradations.apply("denoise", key, dark, 50.0)).min() == 0
  flt = degradations.apply_float("denoise", key, grey / 255.0, 25.0)
  assert float(jnp.std(flt - grey / 255.0)) * 255 == pytest.approx(25.0, rel=0.02)
  assert list(LevelPlan(("denoise",), explicit=(("denoise", (15.0, 25.0, 50.0)),))
              .eval_levels("denoise")) == [(15.0, 15), (25.0, 25), (50.0, 50)]
  with pytest.raises(ValueError, match="eval_levels.denoise"):
    LevelPlan(("denoise",), explicit=(("denoise", (12.5,)),))


def _images(n, h, w, seed):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3)).astype(np.uint8)


def test_per_task_test_sets_against_numpy_psnr_and_skimage_ssim():
  """Identity 'restorer' (the Input row): synthetic denoise on two image sizes (batches
  padded, keys by batch index across the groups), real pairs scored as they are."""
  clean = TestSet("two_sizes", (ImageSet.from_fields({"image": _images(3, 24, 20, 0)}),
                                ImageSet.from_fields({"image": _images(2, 20, 28, 1)})))
  inputs, targets = _images(2, 22, 18, 2), _images(2, 22, 18, 3)
  real = TestSet("pairs", (ImageSet.from_fields({"image": inputs, "target": targets}),),
                 ("a", "b"), real=True)
  plan = LevelPlan(("denoise", "rain"), explicit=(("denoise", (25.0,)), ("rain", (0.02,))))
  results = levels_lib.evaluate_all(TASK, {}, clean, plan, batch_size=2,
                                    predict=identity_predictor(TASK),
                                    test_sets={"clean": clean, "rain": real})
  # Reference: the same degradation calls on the padded batches, PSNR in numpy.
  psnrs, ssims, batch_index = [], [], 0
  for group in clean.groups:
    images = group.images
    for lo in range(0, len(images), 2):
      batch = images[lo:lo + 2]
      padded = np.concatenate([batch, np.zeros((2 - len(batch),) + batch.shape[1:], np.uint8)])
      noisy = np.asarray(degradations.apply("denoise", eval_key(plan.eval_seed, "denoise", 25,
                                                                 batch_index), padded, 25.0))
      for a, b in zip(noisy[:len(batch)], batch):
        psnrs.append(np_psnr(a, b))
        ssims.append(structural_similarity(a.astype(float), b.astype(float), data_range=255,
                                           channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False))
      batch_index += 1
  assert len(psnrs) == 5
  assert results["denoise"]["per_level"] == [[25.0, pytest.approx(np.mean(psnrs), abs=1e-3)]]
  assert results["denoise"]["synthetic"] is True and results["denoise"]["test_set"] == "two_sizes"
  assert results["metrics"]["ssim"]["denoise"]["all"] == pytest.approx(np.mean(ssims), abs=1e-4)
  real_psnr = np.mean([np_psnr(a, b) for a, b in zip(inputs, targets)])
  assert results["rain"]["all"] == pytest.approx(real_psnr, abs=1e-3)
  assert results["rain"]["per_level"] == [] and results["rain"]["synthetic"] is False
  assert results["avg"] == pytest.approx((np.mean(psnrs) + real_psnr) / 2, abs=1e-3)
  assert "scored" not in results["denoise"] and "scored" not in results["rain"]
  # eval.max_examples: each set's entry says how much of it was scored
  part = levels_lib.evaluate_all(TASK, {}, clean, plan, batch_size=2, max_examples=1,
                                 predict=identity_predictor(TASK),
                                 test_sets={"clean": clean, "rain": real})
  assert part["denoise"]["scored"] == [1, 5] and part["rain"]["scored"] == [1, 2]


@pytest.mark.parametrize("prior_context", ["patch", "tile"])
def test_mixed_views_keep_real_inputs_and_degrade_the_rest(prior_context):
  task = RestorationTask(patch=None, flip=False, rot90=False, image_prior="dark_channel",
                         prior_context=prior_context)
  # levels apart: clean 100..200, its 'degradation' 55..155, the real inputs 150..250
  clean = 100 + _images(4, 16, 16, 4) // 2.55
  rainy = 150 + _images(4, 16, 16, 5) // 2.55
  clean, rainy = clean.astype(np.uint8), rainy.astype(np.uint8)
  train = ImageSet.from_fields({"image": clean[:2]})
  pairs = ImageSet.from_fields({"image": rainy[2:], "target": clean[2:]})
  data = Dataset("d", train, train, None, (), train_pairs={"rain": pairs})
  assert data.training_split(("denoise",)) is train
  mixed = data.training_split(("rain",))  # 2 clean tiles, the 2 pairs once
  assert list(mixed.fields["real"]) == [False, False, True, True]
  assert np.array_equal(mixed.fields["target"], clean)
  batch = {k: jnp.asarray(v) for k, v in mixed.fields.items()}
  degraded, target, _ = task.views(jax.random.PRNGKey(0), batch,
                                   lambda key, x: 255 - x)  # a visible 'degradation'
  assert np.array_equal(degraded[:2, ..., :3], 255 - clean[:2])
  assert np.array_equal(degraded[2:, ..., :3], rainy[2:]) and np.array_equal(target, clean)
  # 'tile': the cue (levels of 255) rides along, from each image's own input
  assert degraded.shape[-1] == (4 if prior_context == "tile" else 3)
  if prior_context == "tile":
    inputs = np.concatenate([255 - clean[:2], rainy[2:]]).astype(np.float32)
    darkest = [np.quantile(ndimage.minimum_filter(im.min(-1), size=7, mode="nearest"), 0.01)
               for im in inputs]
    np.testing.assert_allclose(np.asarray(degraded)[..., 3].reshape(4, -1).T,
                               np.broadcast_to(darkest, (256, 4)), atol=1e-3)


def test_photos_source_tiles_and_whole_test_image():
  import ml_collections

  from fdjax.data import restoration_sets

  data = ml_collections.ConfigDict(dict(source="photos", tile=96, validation_fraction=0.1,
                                        max_per_split=0, cache_dir=""))
  ds = restoration_sets.load(data, patch=48, seed=0)
  assert ds.train.images.shape[1:] == (96, 96, 3) and "target" not in ds.train.fields
  assert len(ds.train) + len(ds.validation) == 5 * 7  # 427x640 in 96-tiles, edges added
  test = ds.test_for("rain")
  assert test.sizes() == [(427, 640)] and not test.real and test.names == ("flower",)


def test_planned_work_counts_the_real_pairs_each_stage_trains_on():
  """A stage's planned images (the study ETA's work) are those its loop runs: the clean
  tiles plus its degradations' real pairs (``Dataset.training_split``; with shares, one
  pool per share: ``fdjax.data.share_pools``), in whole batches of ``shares * batch_size``."""
  clean = ImageSet.from_fields({"image": _images(12, 8, 8, 6)})
  pairs = ImageSet.from_fields({"image": _images(2, 8, 8, 7), "target": _images(2, 8, 8, 8)})
  data = Dataset("d", clean, clean, None, (), train_pairs={"rain": pairs})
  names = ("denoise", "rain", "haze")
  # Pairs repeated round(12 / (2 * 3)) = 2 times with three degradations, 6 with rain alone.
  assert data.training_size(names) == len(data.training_split(names)) == 12 + 2 * 2
  assert data.training_size(("rain",)) == len(data.training_split(("rain",))) == 12 + 2 * 6
  assert data.training_size(("denoise",)) == 12
  config = ml_collections.ConfigDict(dict(batch_size=4, fusiondistill=dict(epochs=2),
                                          experts=dict(epochs=1)))
  ctx = SimpleNamespace(dataset=data, degradations=names, config=config)
  combined = Stage("fusiondistill", (), None, block="fusiondistill", shares=3)
  # One pool per share (fdjax.data.share_pools): 12 clean tiles each, rain's 2 pairs
  # x 6 added to its own: 48 examples, 4 steps of 3 x 4 images an epoch: 48 images.
  assert combined.work(ctx) == 2 * 48
  # a combined stage whose recipe takes no pairs (EA-Adam's): 3 x 12 clean, 3 steps
  no_pairs = Stage("ea_adam", (), None, block="fusiondistill", shares=3, pairs=False)
  assert no_pairs.work(ctx) == 2 * 36
  rain_expert = Stage("experts/rain", (), None, block="experts", levels=("rain",))
  assert rain_expert.work(ctx) == 24          # 24 examples, 6 steps of 4
  denoise_expert = Stage("experts/denoise", (), None, block="experts", levels=("denoise",))
  assert denoise_expert.work(ctx) == 12


def test_per_image_values_follow_their_names_in_a_test_set_of_interleaved_sizes():
  # Rain100L and Set14 mix sizes: the set is evaluated size group by size group, with
  # padding rows in a group's last batch. Each image's PSNR must land next to its own
  # name (per_image.csv, the per-set means). Image i is its target plus (i + 1) grey
  # levels, so its PSNR is 20 log10(255 / (i + 1)) (numpy), distinct per image.
  from fdjax.data.paired import PairedImages
  from fdjax.eval.metric import jit_clean, split_scores

  shapes = [(16, 16), (12, 20), (16, 16), (12, 20), (16, 16), (20, 12), (16, 16)]
  rng = np.random.default_rng(0)
  targets = tuple(rng.integers(0, 200, (*s, 3), dtype=np.uint8) for s in shapes)
  inputs = tuple((t + i + 1).astype(np.uint8) for i, t in enumerate(targets))
  names = tuple(f"img{i}" for i in range(len(shapes)))
  test_set = TestSet.of_images(PairedImages("mixed", names, targets, inputs))
  assert len(test_set.groups) == 3 and sorted(test_set.names) == list(names)
  task = RestorationTask(patch=None, flip=False, rot90=False)
  collect: dict = {}
  split_scores(task, jit_clean(identity_predictor(task)), {}, test_set, batch_size=3,
               collect=collect)
  got = dict(zip(test_set.names, collect["psnr"][0]))
  want = {n: np_psnr(inputs[i], targets[i]) for i, n in enumerate(names)}
  assert got.keys() == want.keys()
  for n in names:
    assert got[n] == pytest.approx(want[n], abs=1e-3), n


def test_secondary_metrics_per_level_their_average_and_per_level_csv_rows():
  # SSIM, the second metric, has its own value at each level (not PSNR's, not level 0's
  # everywhere), its own mean over levels and over tasks, and per_level.csv's SSIM column
  # follows the levels.
  from fdjax.eval.report import per_level_rows

  task = RestorationTask(patch=None, flip=False, rot90=False)
  images = ImageSet.from_fields({"image": _images(3, 24, 24, 5)})
  plan = LevelPlan(("denoise", "haze"), explicit=(("denoise", (15.0, 25.0, 50.0)),
                                                   ("haze", (0.5, 1.5))))
  results = levels_lib.evaluate_all(task, {}, images, plan, batch_size=3,
                                    predict=identity_predictor(task))
  ssim = results["metrics"]["ssim"]
  for name, count in (("denoise", 3), ("haze", 2)):
    values = [v for _, v in ssim[name]["per_level"]]
    assert len(values) == count and len(set(values)) == count, values
    assert all(0 <= v <= 1 for v in values)
    assert values != [v for _, v in results[name]["per_level"]]
    assert ssim[name]["all"] == pytest.approx(np.mean(values))
  assert values[0] > values[1]   # more haze, less structure
  assert ssim["avg"] == pytest.approx(np.mean([ssim["denoise"]["all"], ssim["haze"]["all"]]))
  rows = per_level_rows([("Input", 0, results)], task.metric, task.metrics)
  for name in ("denoise", "haze"):
    got = [r["ssim"] for r in rows if r["degradation"] == name]
    assert got == pytest.approx([task.metrics[1].display(v) for _, v in ssim[name]["per_level"]])


class _Parts:
  """Records what evaluate_all tells an EvalProgress."""

  def __init__(self):
    self.planned, self.done_parts = None, []

  def plan(self, parts):
    self.planned = list(parts)

  def done(self, part):
    assert self.planned is not None, "a part ended before the plan was told"
    self.done_parts.append(part)


def test_evaluate_all_tells_its_progress_each_part_with_images_times_levels():
  """clean on 5 images; denoise synthetic on those 5 at 3 levels (15); rain real, 2 pairs,
  scored once whatever its levels (2); haze synthetic at 2 levels; with max_examples=1
  every set counts 1."""
  clean = TestSet("two_sizes", (ImageSet.from_fields({"image": _images(3, 24, 20, 0)}),
                                ImageSet.from_fields({"image": _images(2, 20, 28, 1)})))
  real = TestSet("pairs", (ImageSet.from_fields({"image": _images(2, 16, 16, 2),
                                                 "target": _images(2, 16, 16, 3)}),),
                 ("a", "b"), real=True)
  plan = LevelPlan(("denoise", "rain", "haze"),
                   explicit=(("denoise", (15.0, 25.0, 50.0)), ("rain", (0.02, 0.03, 0.04)),
                             ("haze", (0.5, 1.5))))
  for max_examples, expected in (
      (None, [("clean", 5), ("denoise", 15), ("rain", 2), ("haze", 10)]),
      (1, [("clean", 1), ("denoise", 3), ("rain", 1), ("haze", 2)])):
    parts = _Parts()
    levels_lib.evaluate_all(TASK, {}, clean, plan, batch_size=2, max_examples=max_examples,
                            predict=identity_predictor(TASK), progress=parts,
                            test_sets={"clean": clean, "rain": real})
    assert parts.planned == expected
    assert parts.done_parts == ["clean", "denoise", "rain", "haze"]
