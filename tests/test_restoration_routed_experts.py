"""Routed experts for restoration: the U-Net student's router picks one expert per image
(its per-pixel gates averaged over the image's own pixels, padding left out), that
expert restores the image; the routing accuracy counts those per-image decisions; the
cost columns count the routing decision's parameters by hand from the U-Net's data flow
(router + everything before the routed block it sees) plus one expert. The end-to-end
row runs in the restoration quickstart (too slow for the tiny study test)."""

import math
import re
import types

import jax
import numpy as np
import pytest

from fdjax.data.splits import ImageSet
from fdjax.data.testsets import TestSet
from fdjax.degradations.plan import LevelPlan
from fdjax.errors import ConfigError
from fdjax.methods import routed_experts
from fdjax.moe import routing_cost
from fdjax.moe import usage as usage_lib
from fdjax.tasks.restoration import RestorationTask
from fdjax.trees import stack_trees
from fdjax.validate import validate_config
from test_restoration_moe_student import DENSE, SHAPE, STUDENT, student_variables
from test_restoration_study import load_config

TASK = RestorationTask(patch=None)


def _images():
  """Four 13x17 images (padded to 14x18 by the depth-1 U-Net) unlike each other."""
  rng = np.random.default_rng(3)
  ramp = np.broadcast_to(np.linspace(0, 255, 17)[None, :, None], (13, 17, 3))
  return np.stack([rng.integers(0, 256, (13, 17, 3)), np.full((13, 17, 3), 12),
                   np.full((13, 17, 3), 240), ramp]).astype(np.uint8)


def _varied(variables):
  """The student with large expert prompts in decoder1's router (random init: every image
  picks expert 0). Seed 20: unlike images pick unlike experts, and two of them would pick
  another expert if the padding's gates were averaged in (checked below)."""
  params = dict(variables["params"])
  moe = params["decoder1_block0_moe"]
  prompts = moe["router"]["expert_prompts"]
  scaled = np.random.default_rng(20).normal(0, 3, prompts.shape).astype(np.float32)
  params["decoder1_block0_moe"] = {**moe, "router": {**moe["router"],
                                                     "expert_prompts": jax.numpy.asarray(scaled)}}
  return {**variables, "params": params}


def _hand_choice(variables, images):
  """numpy: per image, the arg-max of the student's gates averaged over its 13x17 pixels."""
  gates = np.asarray(jax.jit(lambda v, x: TASK.forward(STUDENT, v, x)[1]["router"])(
      variables, images))
  assert gates.shape == (len(images), 14, 18, 3)     # padded, per pixel
  choice = gates[:, :13, :17].mean(axis=(1, 2)).argmax(-1)
  assert (choice != gates.mean(axis=(1, 2)).argmax(-1)).any()   # the padding would matter
  return choice


def test_each_image_gets_the_output_of_the_expert_its_router_picks():
  _, experts, variables = student_variables()
  variables, images = _varied(variables), _images()
  choice = _hand_choice(variables, images)
  assert len(set(choice.tolist())) > 1, choice      # the images are routed differently
  predict = jax.jit(routed_experts.routed_predictor(TASK, STUDENT, DENSE))
  out = np.asarray(predict({"router": variables, "experts": stack_trees(experts)}, images))
  dense = jax.jit(lambda v: TASK.predict(DENSE, v, images))
  each = np.stack([np.asarray(dense(e)) for e in experts])
  np.testing.assert_allclose(out, each[choice, np.arange(len(images))], rtol=1e-6, atol=1e-4)


class PixelRouter:
  """A stand-in student (cheap to compile): per-pixel gates ``softmax(x @ w + b)`` at the
  input's resolution, on inputs padded to a stride of 4."""

  num_experts, stride = 3, 4

  def apply(self, variables, x, train=False):
    logits = x @ variables["w"] + variables["b"]
    return x, {"router": jax.nn.softmax(logits), "router_logits": logits}


def test_routing_accuracy_counts_one_decision_per_image():
  """Per-image routing statistics (what the row reports) against numpy: the arg-max of
  the gates averaged over each image's own 13x17 pixels (not the 16x20 padded ones); 3
  images in batches of 2 (the padding example not counted), a real set as it is, and a
  synthetic one at two levels."""
  images = _images()[:3]      # noise, dark, bright: expert 0 for bright pixels, 2 for dark
  w = np.tile(np.float32([[8 / 3, 0, -8 / 3]]), (3, 1))
  b = np.float32([-4, 0, 4])
  logits = images / 255.0 @ w + b
  gates = np.exp(logits - logits.max(-1, keepdims=True))
  choice = (gates / gates.sum(-1, keepdims=True)).mean(axis=(1, 2)).argmax(-1)
  assert len(set(choice.tolist())) > 1, choice
  real = TestSet("pairs", (ImageSet.from_fields({"image": images, "target": images}),),
                 real=True)
  clean = TestSet("clean", (ImageSet.from_fields({"image": images}),))
  plan = LevelPlan(("rain", "haze"), explicit=(("haze", (0.0, 1.0)),))   # haze 0: clean
  router, variables = PixelRouter(), {"w": w, "b": b}
  stats = usage_lib.routing_stats(TASK, router, variables, clean, plan, batch_size=2,
                                  test_sets={"rain": real}, per_image=True)
  np.testing.assert_array_equal(stats.counts[0], [np.bincount(choice, minlength=3)])
  np.testing.assert_array_equal(stats.counts[1][0], np.bincount(choice, minlength=3))
  assert stats.counts[1][1].sum() == 3
  per_pixel = usage_lib.routing_stats(TASK, router, variables, clean, plan, batch_size=2,
                                      test_sets={"rain": real})
  assert per_pixel.counts[0][0].sum() == 3 * 13 * 17


def _size(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def test_routing_decision_cost_counted_by_hand():
  """The finest routed block (decoder1) routes on its input ('stage'): intro, encoder1,
  down1, the whole routed middle block (all 3 copies, shared block, gate, router), up1 and
  decoder1's router; on the pooled image ('image'): decoder1's router alone."""
  _, experts, variables = student_variables()
  p, shape = variables["params"], (1, *SHAPE)
  hand = sum(_size(p[n]) for n in ("intro", "encoder1_block0", "down1", "middle_block0_moe",
                                   "up1"))
  hand += _size(p["decoder1_block0_moe"]["router"])
  assert routing_cost.decision_params(STUDENT, variables, shape) == hand
  on_image = STUDENT.clone(router_source="image")
  shapes = jax.eval_shape(on_image.init, jax.random.key(0), jax.ShapeDtypeStruct(shape,
                                                                                 np.float32))
  router = _size(shapes["params"]["decoder1_block0_moe"]["router"])
  assert routing_cost.decision_params(on_image, shapes, shape) == router < hand
  # The row's columns: the decision plus N experts held, plus one expert used; its FLOPs
  # lie between those of the router alone and of the whole student, plus one expert.
  ctx = types.SimpleNamespace(model=DENSE, dataset=types.SimpleNamespace(image_shape=SHAPE))
  columns = routed_experts.cost_columns(ctx, STUDENT, variables, experts)
  one = _size(experts[0]["params"])
  assert columns["params"] == hand + 3 * one and columns["active params"] == hand + one
  dense = routing_cost.inference_flops(lambda v, x: DENSE.apply(v, x)[0], experts[0], shape)
  full = routing_cost.inference_flops(lambda v, x: STUDENT.apply(v, x)[0], variables, shape)
  alone = routing_cost.decision_flops(on_image, shapes, shape)
  assert 1 + alone / dense < columns["FLOPs/img (rel.)"] < 1 + full / dense


def test_restoration_accepts_routed_experts_and_checks_its_student():
  config = load_config("restoration_quickstart")
  assert "routed_experts" in config.methods.split(",")
  validate_config(config)
  config.methods = "oracle,routed_experts"
  config.moe.stages = "stage3"
  with pytest.raises(ConfigError, match=re.escape("moe.stages for restoration names U-Net")):
    validate_config(config)
