"""NIQE as a restoration table column (restoration.extra_metrics) and as EA-Adam's
perception fitness (ea_adam.perception_fitness='niqe').

References: ``fdjax.eval.niqe.niqe`` itself is checked against BasicSR in
tests/test_niqe.py; here the column / fitness must equal it computed directly on the
restored images cropped back to their true size (and NOT on the stride-padded output),
and rank a blurred output as NIQE ranks it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import data as skdata

from configs import population_sr
from fdjax.data import ImageSet
from fdjax.errors import ConfigError
from fdjax.eval import inference
from fdjax.eval.metric import jit_clean, predictor, split_scores
from fdjax.eval.niqe import niqe
from fdjax.population.perception_fitness import PerceptionScores
from fdjax.tasks.restoration import RestorationTask
from fdjax.tasks.restoration_niqe import per_image_niqe
from fdjax.validate import validate_config


def photo(h: int, w: int) -> np.ndarray:
  """uint8 [h, w, 3]: a crop of scikit-image's astronaut photo (natural texture)."""
  return skdata.astronaut()[40:40 + h, 150:150 + w]


class Dim(nn.Module):
  """A stand-in restorer of stride 4 (as a depth-2 U-Net): 0.8 x + 0.1 + b (0..1)."""
  stride: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    return 0.8 * x + 0.1 + self.param("b", nn.initializers.zeros, ()), {}


def test_niqe_column_is_niqe_of_the_cropped_restored_images_not_the_padded_ones():
  """A 200x198 image through a stride-4 model (padded to 200x200, cropped back): the
  column and the per-image value equal niqe(predict output, crop_border=shave); NIQE
  of the padded output differs (2x2 blocks instead of 2x1), so the test can fail."""
  task = RestorationTask(y_channel=True, shave=4, extra_metrics=("niqe",))
  model = Dim()
  images = photo(200, 198)[None]
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)
  collect: dict = {}
  got = split_scores(task, jit_clean(predictor(task, model)), variables,
                     ImageSet.from_fields({"image": images}), batch_size=1, collect=collect)
  restored = task.predict(model, variables, images)
  assert restored.shape == (1, 200, 198, 3)
  want = float(niqe(restored, crop_border=4)[0])
  np.testing.assert_allclose(got["niqe"], want, rtol=2e-4)
  np.testing.assert_allclose(collect["niqe"][0], [want], rtol=2e-4)
  out, _ = model.apply(variables, inference.pad_to_multiple(task.model_input(images), 4),
                       train=False)
  padded = jnp.clip(out * 255.0, 0.0, 255.0)
  assert padded.shape == (1, 200, 200, 3)
  assert abs(float(niqe(padded, crop_border=4)[0]) - want) > 1e-2
  spec = task.metrics[-1]
  assert spec.name == "niqe" and not spec.higher_is_better and "lower" in spec.label


def test_niqe_is_off_by_default_and_nan_for_images_under_two_blocks():
  assert [m.name for m in RestorationTask().metrics] == ["psnr", "ssim"]
  small = jnp.zeros((2, 200, 100, 3))          # 192x92 after the crop: no whole block
  assert np.isnan(np.asarray(per_image_niqe(small, 4))).all()
  with pytest.raises(ConfigError, match="extra_metrics"):
    RestorationTask(extra_metrics=("lpips",))


def box_blur(images, radius: int = 2):
  """Mean over the (2r+1)^2 circular shifts: a box blur with wrap-around."""
  shifts = [jnp.roll(images, (dy, dx), axis=(1, 2)) for dy in range(-radius, radius + 1)
            for dx in range(-radius, radius + 1)]
  return sum(shifts) / len(shifts)


def test_niqe_fitness_ranks_a_blurred_member_below_a_sharp_one_as_niqe_does():
  """Two 'members' of one predictor (blend 0 = sharp, 1 = box-blurred) scored by the
  perception fitness with 'niqe': each value equals niqe of its outputs, and the blurred
  member (higher NIQE) gets the lower fitness (-NIQE), as NIQE ranks them."""
  images = photo(200, 198)[None]              # the size of the column test: one compile
  predict = jax.jit(lambda v, x: (1 - v["a"]) * x.astype(jnp.float32)
                    + v["a"] * box_blur(x.astype(jnp.float32)))
  scorer = PerceptionScores(RestorationTask(y_channel=True, shave=4), "niqe")
  split = ImageSet.from_fields({"image": images})
  fitness, direct = [], []
  for a in (0.0, 1.0):
    v = {"a": jnp.float32(a)}
    fitness.append(-split_scores(scorer, predict, v, split, batch_size=1)["niqe"])
    direct.append(float(niqe(predict(v, images), crop_border=4)[0]))
  np.testing.assert_allclose(fitness, -np.asarray(direct), rtol=2e-4)
  assert direct[1] > direct[0] + 1.0 and fitness[0] > fitness[1]


def test_niqe_fitness_needs_tiles_of_two_blocks_after_the_shave(tmp_path):
  config = population_sr.get_config("smoke")
  config.data.root = str(tmp_path)   # validation checks the folder exists, not its sets
  config.ea_adam.perception_fitness = "niqe"
  with pytest.raises(ConfigError, match=r"data.tile >= 200, got 64x64"):
    validate_config(config, device_count=1)
  config.data.tile = 200
  validate_config(config, device_count=1)
  config.ea_adam.perception_fitness = "lpips"
  with pytest.raises(ConfigError, match="ea_adam.perception_fitness must be one of"):
    validate_config(config, device_count=1)
