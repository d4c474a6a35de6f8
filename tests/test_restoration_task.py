"""The restoration task: training views keep input and target aligned, the loss is L1,
the score is the mean per-image PSNR, predict works at any size, and the generic
engine (train step, split scores) runs it unchanged."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fdjax import tasks
from fdjax.data import ImageSet
from fdjax.errors import ConfigError
from fdjax.eval import split_scores
from fdjax.models import NAFNet, UNet
from fdjax.tasks.restoration import RestorationTask
from fdjax.train import create_train_state, make_mesh, make_train_step
from fdjax.train.objectives import supervised_loss
from random_weights import random_variables


def coordinate_images(b, h, w):
  """uint8 [b, h, w, 3]: pixel (y, x) of image i holds (y, x, i): every patch says where
  it came from."""
  y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  return np.stack([np.stack([y, x, np.full_like(y, i)], -1) for i in range(b)]).astype(np.uint8)


def dihedral(patch):
  """The 8 flips/rotations of ``patch`` [S, S, C]."""
  rotations = [np.rot90(patch, k) for k in range(4)]
  return rotations + [np.fliplr(r) for r in rotations]


def undo_transform(patch, image_index):
  """Index (0..7) of the transform that maps ``patch`` back to a plain crop of image
  ``image_index`` of ``coordinate_images``, or None."""
  s = patch.shape[0]
  for t, candidate in enumerate(dihedral(patch)):
    y0, x0 = int(candidate[0, 0, 0]), int(candidate[0, 0, 1])
    ys, xs = np.meshgrid(np.arange(y0, y0 + s), np.arange(x0, x0 + s), indexing="ij")
    if ((candidate[..., 0] == ys).all() and (candidate[..., 1] == xs).all()
        and (candidate[..., 2] == image_index).all()):
      return t
  return None


def test_paired_views_crop_flip_and_rotate_input_and_target_together():
  source = coordinate_images(64, 12, 10)
  batch = {"image": jnp.asarray(source), "target": jnp.asarray(255 - source)}
  task = RestorationTask(patch=6, rotate_real=True)   # real pairs turned by 90 degrees too
  degraded, clean, teacher = jax.jit(task.views)(jax.random.key(0), batch)
  degraded, clean, teacher = map(np.asarray, (degraded, clean, teacher))
  assert degraded.shape == clean.shape == (64, 6, 6, 3) and degraded.dtype == np.uint8
  np.testing.assert_array_equal(clean, 255 - degraded)  # aligned pixel for pixel
  np.testing.assert_array_equal(teacher, degraded)
  transforms = [undo_transform(p, i) for i, p in enumerate(degraded)]
  assert None not in transforms  # every view is a flip/rotation of one crop of its image
  assert set(transforms) == set(range(8))  # all 8 occur, per image independently
  assert len({(int(p[0, 0, 0]), int(p[0, 0, 1])) for p in degraded}) > 10  # varied crops


@pytest.mark.parametrize("mixed", [True, False])
def test_real_pairs_are_not_turned_sideways_unless_rotate_real(mixed):
  # A real pair's rain falls down its rows as Rain100L's does: by default it is flipped
  # and turned by 180 degrees, never by 90; clean tiles of a mixed batch get all 8.
  source = coordinate_images(128, 12, 10)
  real = np.arange(128) % 2 == 0 if mixed else np.ones(128, bool)
  batch = {"image": jnp.asarray(source), "target": jnp.asarray(source)}
  if mixed:
    batch["real"] = jnp.asarray(real)
  _, clean, _ = jax.jit(RestorationTask(patch=6).views)(jax.random.key(1), batch)
  transforms = np.array([undo_transform(p, i) for i, p in enumerate(np.asarray(clean))])
  assert set(transforms[real]) == {0, 2, 4, 6}   # identity, 180, and their mirror images
  if mixed:
    assert set(transforms[~real]) == set(range(8))


def test_clean_only_views_degrade_the_clean_patch_on_device():
  source = coordinate_images(4, 8, 8)
  task = RestorationTask(patch=4)
  degrade = lambda key, images: 255 - images
  degraded, clean, _ = task.views(jax.random.key(1), {"image": jnp.asarray(source)}, degrade)
  np.testing.assert_array_equal(np.asarray(degraded), 255 - np.asarray(clean))
  assert [undo_transform(p, i) for i, p in enumerate(np.asarray(clean))].count(None) == 0
  same, clean, _ = task.views(jax.random.key(1), {"image": jnp.asarray(source)}, None)
  np.testing.assert_array_equal(np.asarray(same), np.asarray(clean))
  # A batch already of patch size is not cropped; flips off keep it as it is.
  plain = RestorationTask(patch=8, flip=False, rot90=False)
  out, _, _ = plain.views(jax.random.key(2), {"image": jnp.asarray(source)})
  np.testing.assert_array_equal(np.asarray(out), source)
  with pytest.raises(ValueError, match="square"):
    RestorationTask(patch=None).views(jax.random.key(0), {"image": jnp.zeros((1, 4, 6, 3),
                                                                              jnp.uint8)})


def test_per_example_loss_is_l1_in_model_space():
  rng = np.random.default_rng(0)
  outputs = rng.random((4, 5, 6, 3)).astype(np.float32)
  target = rng.integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
  task = RestorationTask()
  loss = np.asarray(task.per_example_loss(jnp.asarray(outputs), jnp.asarray(target)))
  np.testing.assert_allclose(loss, np.abs(outputs - target / 255.0).mean(axis=(1, 2, 3)),
                             rtol=1e-6)
  shares = task.per_example_loss(jnp.asarray(outputs).reshape(2, 2, 5, 6, 3),
                                 jnp.asarray(target).reshape(2, 2, 5, 6, 3))
  np.testing.assert_allclose(np.asarray(shares).ravel(), loss, rtol=1e-6)


def numpy_psnr(a, b):
  mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=(1, 2, 3))
  return 10 * np.log10(255.0 ** 2 / mse)


def test_scores_are_sums_of_per_image_psnr_over_unmasked_images():
  rng = np.random.default_rng(1)
  target = rng.integers(0, 256, (5, 12, 12, 3), dtype=np.uint8)
  outputs = np.clip(target + rng.normal(0, 10, target.shape), 0, 255).astype(np.float32)
  mask = np.array([True, True, True, True, False])
  outputs[4], target[4] = 0, 0  # a padding image: PSNR inf, masked out
  task = RestorationTask()
  total, count = task.scores(jnp.asarray(outputs), {"image": jnp.zeros_like(target),
                                                    "target": jnp.asarray(target),
                                                    "mask": jnp.asarray(mask)})["psnr"]
  assert int(count) == 4
  np.testing.assert_allclose(float(total) / 4, numpy_psnr(outputs[:4], target[:4]).mean(),
                             rtol=1e-5)
  # Clean-only batches score against 'image' (the clean image, degraded on the way in).
  total, count = task.scores(jnp.asarray(outputs[:4]),
                             {"image": jnp.asarray(target[:4])})["psnr"]
  np.testing.assert_allclose(float(total), numpy_psnr(outputs[:4], target[:4]).sum(),
                             rtol=1e-5)
  assert task.metric.name == "psnr" and task.metric.unit == "dB" and task.metric.higher_is_better
  members = jnp.stack([jnp.zeros((1, 2, 2, 3)), jnp.full((1, 2, 2, 3), 4.0)])
  np.testing.assert_array_equal(np.asarray(task.ensemble(members)), 2.0)


def test_config_block_registry_and_models():
  config = ml_collections.ConfigDict({"task": "restoration"})
  task = tasks.from_config(config)
  assert task == RestorationTask() and isinstance(task, tasks.TASKS["restoration"])
  model = task.build_model(config, tasks.DataSpec((64, 64, 3)))
  assert isinstance(model, UNet) and (model.width, model.depth) == (16, 2)
  config.restoration = {"model": "nafnet", "width": 8, "depth": 3, "blocks": (1, 1, 2),
                        "patch": 32, "rot90": False, "y_channel": True, "shave": 2}
  task = tasks.from_config(config)
  assert (task.patch, task.rot90, task.y_channel, task.shave) == (32, False, True, 2)
  assert task.metric.label == "PSNR (Y)"
  model = task.build_model(config, tasks.DataSpec((32, 32, 3)))
  assert isinstance(model, NAFNet) and model.blocks == (1, 1, 2) and model.stride == 8
  config.restoration.widht = 4
  with pytest.raises(ConfigError, match=r"unknown config.restoration fields \['widht'\]"):
    tasks.from_config(config)


def test_engine_trains_and_scores_a_restorer_at_any_size():
  """The generic train step (a degradation made on device for clean-only patches, here
  halving the brightness) lowers the L1 loss; split_scores scores whole odd-sized paired
  images through predict's padding, all metrics or only the one asked for."""
  model = UNet(width=4, depth=2, blocks=1, middle_blocks=0)
  task = RestorationTask(patch=8)
  variables = random_variables(model, 0, (8, 8, 3))
  variables["params"] = jax.tree.map(lambda x: 0.1 * x, variables["params"])
  degrade = lambda key, images: images // 2
  mesh = make_mesh()
  step = make_train_step(supervised_loss(model, task, degrade), optax.adam(1e-2), mesh)
  state = create_train_state(variables, optax.adam(1e-2), jax.random.PRNGKey(0), mesh)
  rng = np.random.default_rng(2)
  smooth = np.repeat(np.repeat(rng.integers(0, 256, (8, 3, 3, 3)), 4, 1), 4, 2)
  batch = {"image": jnp.asarray(smooth.astype(np.uint8))}
  losses = []
  for _ in range(25):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all() and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
  assert state.batch_stats == {}

  # Whole 10x13 images (off the stride 4): predict pads, runs and crops back.
  clean = rng.integers(0, 256, (4, 10, 13, 3), dtype=np.uint8)
  split = ImageSet.from_fields({"image": 255 - clean, "target": clean})
  predict = jax.jit(lambda v, x: task.predict(model, v, x))
  values = split_scores(task, predict, state.variables, split, batch_size=2)
  restored = np.concatenate([np.asarray(predict(state.variables, 255 - clean[i:i + 2]))
                             for i in (0, 2)])
  assert restored.shape == clean.shape and 0 <= restored.min() and restored.max() <= 255
  assert sorted(values) == ["psnr", "ssim"]
  np.testing.assert_allclose(values["psnr"], numpy_psnr(restored, clean).mean(), rtol=1e-4)
  only = split_scores(task, predict, state.variables, split, batch_size=2, metrics=("psnr",))
  assert list(only) == ["psnr"]
  np.testing.assert_allclose(only["psnr"], numpy_psnr(restored, clean).mean(), rtol=1e-4)


@pytest.mark.parametrize("loss", ["l1", "charbonnier"])
def test_the_training_loss_per_image_against_numpy(loss):
  from fdjax.tasks.restoration import CHARBONNIER_EPS, RestorationTask

  rng = np.random.default_rng(0)
  outputs = rng.uniform(0, 1, (2, 5, 6, 3)).astype(np.float32)
  target = rng.integers(0, 256, (2, 5, 6, 3), dtype=np.uint8)
  d = outputs.astype(np.float64) - target / 255.0
  want = (np.abs(d) if loss == "l1" else np.sqrt(d * d + CHARBONNIER_EPS ** 2)).mean((1, 2, 3))
  task = RestorationTask(loss=loss)
  np.testing.assert_allclose(task.per_example_loss(jnp.asarray(outputs), jnp.asarray(target)),
                             want, rtol=1e-5)
  np.testing.assert_allclose(task.output_distance(jnp.asarray(outputs),
                                                  jnp.asarray(outputs[::-1])),
                             (np.abs(outputs - outputs[::-1]) if loss == "l1" else
                              np.sqrt((outputs - outputs[::-1]) ** 2 + CHARBONNIER_EPS ** 2)
                              ).mean((1, 2, 3)), rtol=1e-5)


def test_an_ensemble_of_restorers_is_the_mean_image_of_any_number_of_members():
  from fdjax.tasks.restoration import RestorationTask

  members = np.random.default_rng(1).uniform(0, 255, (3, 2, 4, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(RestorationTask().ensemble(jnp.asarray(members)),
                             members.mean(0), rtol=1e-6)


def test_a_shaved_border_alone_labels_every_column():
  from fdjax.tasks.restoration_scoring import labels

  assert labels(["haze"], False, 0, ()) == {}
  assert set(labels(["haze"], False, 4, ())) == {"clean", "haze"}
  assert set(labels(["haze", "rain"], False, 0, (("rain", True, 0),))) == {"clean", "haze",
                                                                            "rain"}


def test_patches_cover_every_offset_and_flips_without_turns_are_left_right():
  from fdjax.tasks.restoration_views import random_flip_rot90, random_patches

  # 2000 crops of 3x3 from 6x6 and from 6x7 images (a pixel's value is its index):
  # every (y, x) offset occurs, y and x drawn apart (not on a diagonal).
  for width in (6, 7):
    index = np.broadcast_to(np.arange(6 * width).reshape(1, 6, width, 1), (2000, 6, width, 1))
    (patch,) = random_patches(jax.random.key(0), jnp.asarray(index), size=3)
    y, x = np.divmod(np.asarray(patch)[:, 0, 0, 0], width)
    assert set(zip(y.tolist(), x.tolist())) == {(i, j) for i in range(4)
                                                for j in range(width - 2)}
  # Without quarter turns (real rain), each image is itself or its left-right mirror.
  square = jnp.asarray(np.broadcast_to(np.arange(16).reshape(1, 4, 4, 1), (64, 4, 4, 1)))
  (out,) = random_flip_rot90(jax.random.key(1), square, flip=True, rot90=False)
  out = np.asarray(out)
  mirror = np.asarray(square)[:, :, ::-1]
  same = np.all(out == np.asarray(square), axis=(1, 2, 3))
  flipped = np.all(out == mirror, axis=(1, 2, 3))
  assert np.all(same | flipped) and same.any() and flipped.any()
