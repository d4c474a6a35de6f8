"""The restoration MoE student (``fdjax.moe.unet_student``): its variables come from the
per-task expert U-Nets (expert i of a routed block = that block of expert U-Net i) and
the fused U-Net (everything else); with every router one-hot on expert i it computes
expert U-Net i exactly (when the experts differ from the fused model only in the routed
blocks); the task hook builds it from the config with one-line errors.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fdjax import tasks
from fdjax.config import base_config
from fdjax.errors import ConfigError
from fdjax.models import UNet
from fdjax.moe.model import MoEResNet
from fdjax.moe.student import moe_student
from fdjax.moe.unet_student import RoutedUNet, unet_moe_variables
from random_weights import random_variables

SHAPE = (16, 16, 3)
DENSE = UNet(width=4, depth=1, blocks=1, middle_blocks=1)
ROUTED = ("middle_block0", "decoder1_block0")
STUDENT = RoutedUNet(width=4, depth=1, blocks=1, middle_blocks=1, num_experts=3, k=2,
                     routed=("middle", "decoder1"), num_prompts=4, channel_sharing=True)


def models():
  """The fused U-Net and three experts that differ from it only in the routed blocks."""
  fused = random_variables(DENSE, 0, SHAPE)
  experts = []
  for i in range(3):
    other = random_variables(DENSE, 1 + i, SHAPE)["params"]
    params = {name: (other[name] if name in ROUTED else sub)
              for name, sub in fused["params"].items()}
    experts.append({"params": params, "batch_stats": {}})
  return fused, experts


@functools.lru_cache(maxsize=None)
def student_variables():
  """``(fused, experts, student variables)``; one initialisation for the module's tests."""
  fused, experts = models()
  return fused, experts, unet_moe_variables(STUDENT, fused, experts,
                                            jax.random.key(0, impl="rbg"), (13, 17, 3))


def test_student_weights_are_the_experts_blocks_and_the_fused_model():
  fused, experts, variables = student_variables()
  params = variables["params"]
  for name in ROUTED:
    moe = params[f"{name}_moe"]
    for layer in ("conv1", "conv2"):
      for leaf in ("kernel", "bias"):
        for i in range(3):
          np.testing.assert_array_equal(np.asarray(moe["experts"][layer][leaf][i]),
                                        np.asarray(experts[i]["params"][name][layer][leaf]))
        np.testing.assert_array_equal(np.asarray(moe["shared"][layer][leaf]),
                                      np.asarray(fused["params"][name][layer][leaf]))
    assert set(moe) == {"experts", "shared", "router", "channel_gate"}
  for name in ("intro", "encoder1_block0", "down1", "up1", "ending"):
    for a, b in zip(jax.tree.leaves(params[name]), jax.tree.leaves(fused["params"][name])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(ValueError, match="need 3 expert variables"):
    unet_moe_variables(STUDENT, fused, experts[:2], jax.random.key(0), SHAPE)


def one_hot_router(router: dict, expert: int) -> dict:
  """Router parameters whose gates are one-hot on ``expert`` for every input: the task
  prompt is all ones (every basic prompt is, and the prompt weights sum to 1) and only
  its rows of ``expert``'s expert prompt are non-zero (logit 50 * D against 0)."""
  basic = np.ones(router["basic_prompts"].shape, np.float32)
  dim = basic.shape[1]
  expert_prompts = np.zeros(router["expert_prompts"].shape, np.float32)
  expert_prompts[:dim, expert] = 50.0
  return {**router, "basic_prompts": jnp.asarray(basic),
          "expert_prompts": jnp.asarray(expert_prompts)}


def test_one_hot_routing_reproduces_the_expert_u_net():
  fused, experts, variables = student_variables()
  x = jnp.asarray(np.random.default_rng(5).random((2, *SHAPE)), jnp.float32)
  expert = 1
  params = dict(variables["params"])
  for name in ROUTED:
    moe = params[f"{name}_moe"]
    # Channel sharing's gate sigmoid(-50) ~ 2e-22 on the shared (fused) block: ~all experts.
    gate = {**moe["channel_gate"], "bias": jnp.full_like(moe["channel_gate"]["bias"], -50.0)}
    params[f"{name}_moe"] = {**moe, "router": one_hot_router(moe["router"], expert),
                             "channel_gate": gate}
  out, features = jax.jit(STUDENT.apply)({"params": params}, x)
  want, _ = jax.jit(DENSE.apply)(experts[expert], x)   # the dense U-Net, no routing code
  np.testing.assert_allclose(np.asarray(out), np.asarray(want), rtol=1e-5, atol=1e-6)
  other, _ = jax.jit(DENSE.apply)(experts[0], x)
  assert np.abs(np.asarray(other) - np.asarray(want)).max() > 1e-3   # the experts differ
  for name in ROUTED:
    gates = np.asarray(features[f"router_{name}"])
    want_gates = np.broadcast_to(np.eye(3, dtype=np.float32)[expert], gates.shape)
    np.testing.assert_array_equal(gates, want_gates)
  assert features["router"].shape == (2, 16, 16, 3)   # the finest routed block's, per pixel


def restoration_config(**moe) -> ml_collections.ConfigDict:
  config = base_config()
  config.task = "restoration"
  config.degradations = "awgn,haze"
  config.restoration = ml_collections.ConfigDict({"width": 4, "depth": 1, "model": "nafnet"})
  config.moe.update({"stages": "decoder1", "routing": "pixel", **moe})
  return config


def test_the_task_builds_its_own_student():
  config = restoration_config(channel_sharing=True)
  student = moe_student(config, tasks.DataSpec(SHAPE), 1)
  assert isinstance(student, RoutedUNet)
  assert (student.base, student.num_experts, student.k, student.routed) == (
      "nafnet", 2, 1, ("decoder1",))
  assert student.channel_sharing and student.width == 4
  classifier = moe_student(base_config(), tasks.DataSpec((32, 32, 3), 10), 2)
  assert isinstance(classifier, MoEResNet) and classifier.num_classes == 10


@pytest.mark.parametrize("change, message", [
    (dict(stages="stage3"), "moe.stages for restoration names U-Net levels"),
    (dict(routing="tokens"), "moe.routing 'pixel' or 'image'"),
    (dict(router_input="stem"), "moe.router_input"),
])
def test_bad_moe_configs_are_one_line_config_errors(change, message):
  with pytest.raises(ConfigError, match=message):
    moe_student(restoration_config(**change), tasks.DataSpec(SHAPE), 1)


def test_students_need_a_plain_u_net_and_model_options_are_checked():
  config = restoration_config()
  config.restoration.model = "promptir"
  with pytest.raises(ConfigError, match="restoration.model must be one of"):
    moe_student(config, tasks.DataSpec(SHAPE), 1)
  config.restoration.model = "measnet"
  config.restoration.model_options = "num_experts=3, prompt_dim=4"
  task = tasks.from_config(config)
  with pytest.raises(ConfigError, match=r"\['prompt_dim'\] are not fields of MEASNet"):
    task.build_model(config, tasks.DataSpec(SHAPE))
  config.restoration.model_options = "num_experts=3,k=1"
  model = task.build_model(config, tasks.DataSpec(SHAPE))
  assert (model.num_experts, model.k, model.width) == (3, 1, 4)


def test_router_usage_counts_the_unpadded_pixels_of_every_image_size():
  """Per-pixel routing over a test set of two image sizes (13x17, padded to 14x18 by the
  depth-1 U-Net, and 8x8): each level counts exactly the H x W decisions of every image
  (padding pixels and padding examples dropped); a real set is one level, nan, whose
  counts per expert equal numpy's bincount of the arg-max gates cropped to the image."""
  from fdjax.data.splits import ImageSet
  from fdjax.data.testsets import TestSet
  from fdjax.degradations.plan import LevelPlan
  from fdjax.moe import usage as usage_lib
  from fdjax.tasks.restoration import RestorationTask

  _, _, variables = student_variables()
  rng = np.random.default_rng(0)
  big, small = (rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
                for n, h, w in ((3, 13, 17), (2, 8, 8)))
  groups = (ImageSet.from_fields({"image": big}), ImageSet.from_fields({"image": small}))
  real = TestSet("pairs", (ImageSet.from_fields({"image": big, "target": big}),), real=True)
  plan = LevelPlan(("denoise", "haze"), (), explicit=(("denoise", (0.0, 25.0)),
                                                      ("haze", (1.0,))))
  task, model = RestorationTask(patch=None), STUDENT.clone(k=1)
  stats = usage_lib.routing_stats(task, model, variables, TestSet("mixed", groups), plan,
                                  batch_size=2, test_sets={"haze": real})
  assert stats.levels[0] == [0.0, 25.0] and np.isnan(stats.levels[1]).all()
  np.testing.assert_allclose(stats.counts[0].sum(axis=1), 3 * 13 * 17 + 2 * 8 * 8)
  forward = jax.jit(lambda v, x: task.forward(model, v, x)[1]["router"])
  top1 = np.asarray(forward(variables, big))[:, :13, :17].argmax(-1)
  np.testing.assert_allclose(stats.counts[1][0], np.bincount(top1.ravel(), minlength=3))


def test_each_k_row_reports_its_own_routing_when_a_routed_block_feeds_the_router(tmp_path):
  """decoder1's router sees the middle block's mixture, which changes with K: the
  FusionDistill-MoE rows' routing statistics are measured (and cached) per K, each
  equal to ``routing_stats`` of the student at that K."""
  from types import SimpleNamespace

  from fdjax.data.splits import ImageSet
  from fdjax.data.testsets import TestSet
  from fdjax.degradations.plan import LevelPlan
  from fdjax.methods import fusiondistill_moe
  from fdjax.moe import usage as usage_lib
  from fdjax.tasks.restoration import RestorationTask

  _, _, variables = student_variables()
  images = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
  clean = TestSet("clean", (ImageSet.from_fields({"image": images}),))
  plan = LevelPlan(("denoise", "haze"), (), explicit=(("denoise", (25.0,)), ("haze", (1.0,))))
  task = RestorationTask(patch=None)
  dataset = SimpleNamespace(test_for=lambda name: clean, test_sets={"clean": clean})
  ctx = SimpleNamespace(config=ml_collections.ConfigDict(dict(eval=dict(max_examples=0),
                                                              eval_batch_size=2)),
                        dataset=dataset, plan=plan, task=task)
  evaluate = SimpleNamespace(path=lambda name, v: str(tmp_path / f"{name}.json"))
  runner = SimpleNamespace(ctx=ctx, evaluate=evaluate)
  measured = {k: fusiondistill_moe.routing(runner, STUDENT.clone(k=k), variables)
              for k in (1, 3)}
  for k, stats in measured.items():
    direct = usage_lib.routing_stats(task, STUDENT.clone(k=k), variables, clean, plan,
                                     batch_size=2, test_sets={"clean": clean})
    for got, want in zip(stats.counts, direct.counts):
      np.testing.assert_array_equal(got, want)
  assert not all(np.array_equal(a, b) for a, b in zip(measured[1].counts, measured[3].counts))
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      "routing_fusiondistill_moe_k1.json", "routing_fusiondistill_moe_k3.json"]


def test_config_options_reach_the_students_and_image_routing_gives_one_gate_per_image():
  # moe.routing='image': one gate vector per image [B, E] (every pixel of it the same
  # experts); 'pixel': [B, h, w, E]. The classifier student takes moe.router_input and
  # prompt_init_scale as they are named.
  x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, *SHAPE)), jnp.float32)
  for routing, ndim in (("image", 2), ("pixel", 4)):
    student = moe_student(restoration_config(routing=routing), tasks.DataSpec(SHAPE), 1)
    assert student.routing == routing
    # Shapes only: traced (jax.eval_shape) through the same init and apply, not computed
    # (eager, op by op, they took 8 s of the suite).
    variables = jax.eval_shape(student.init, jax.random.key(0), x)
    _, features = jax.eval_shape(student.apply, variables, x)
    assert features["router"].ndim == ndim and features["router"].shape[0] == 2
  for router_input, source in (("stage", "input"), ("image", "image"), ("stem", "stem")):
    config = base_config()
    config.moe.router_input, config.moe.prompt_init_scale = router_input, 0.25
    classifier = moe_student(config, tasks.DataSpec((32, 32, 3), 10), 1)
    assert (classifier.router_source, classifier.prompt_init_scale) == (source, 0.25)
