"""Every parameter of the restoration variants PromptIR, MEASNet and the U-Net MoE student
(the plain U-Net and NAFNet: tests/test_restoration_models.py) receives a non-zero
gradient from its real training loss
(``supervised_loss`` for the dense models, ``fusiondistill_loss`` with the balance loss
and noisy gating for the student) on a tiny 16x16 batch: no branch computed and thrown
away, no always-empty routing. Plus the shapes and features of the new variants.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdjax.distill import fusiondistill_loss
from fdjax.errors import ConfigError
from fdjax.models import MEASNet, PromptIR, UNet
from fdjax.moe.student import shared_param
from fdjax.moe.unet_student import RoutedUNet
from fdjax.tasks import RestorationTask
from fdjax.train.objectives import supervised_loss
from fdjax.trees import stack_trees
from random_weights import random_variables

TINY = dict(width=4, depth=1, blocks=1, middle_blocks=1)
SHAPE = (16, 16, 3)
TASK = RestorationTask(patch=None, flip=False, rot90=False)   # fewer ops to compile
# (The plain U-Net and NAFNet: tests/test_restoration_models.py, the same check on L1.)
DENSE = {
    "promptir": PromptIR(**TINY, prompt_dim=4, prompt_size=4, num_prompts=3),
    # channel sharing on: its shared MLP and channel gate must learn too.
    "measnet": MEASNet(**TINY, num_experts=3, k=2, num_prompts=4, channel_sharing=True),
}
STUDENT = RoutedUNet(**TINY, num_experts=2, k=1, routed=("decoder1",), num_prompts=4,
                     noisy_gating=True, channel_sharing=True)


def noisy(key, images):
  """A stand-in degradation: uint8 images plus uniform noise in [-20, 20]."""
  noise = jax.random.uniform(key, images.shape, minval=-20.0, maxval=20.0)
  return jnp.clip(images.astype(jnp.float32) + noise, 0, 255).astype(jnp.uint8)


def batch(n: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.integers(0, 256, (n, *SHAPE)), jnp.uint8)}


def zero_gradient_leaves(grads):
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  return [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g))]


@functools.lru_cache(maxsize=None)
def dense_grads(name):
  model = DENSE[name]
  variables = random_variables(model, 1, SHAPE)
  loss_fn = supervised_loss(model, TASK, noisy)
  grad = jax.jit(jax.grad(lambda p: loss_fn(p, variables["batch_stats"], batch(2),
                                            jax.random.key(0, impl="rbg"))[0]))
  return variables, grad(variables["params"])


@pytest.mark.parametrize("name", sorted(DENSE))
def test_every_parameter_of_every_dense_variant_gets_a_gradient(name):
  variables, grads = dense_grads(name)
  assert zero_gradient_leaves(grads) == []
  assert jax.tree.structure(grads) == jax.tree.structure(variables["params"])


def test_every_parameter_of_the_moe_student_gets_a_gradient_from_fusiondistill():
  dense = UNet(**TINY)
  experts = [random_variables(dense, 10 + i, SHAPE) for i in range(2)]
  variables = random_variables(STUDENT, 2, SHAPE)
  loss_fn = fusiondistill_loss(STUDENT, TASK, degrade=noisy, num_experts=2,
                               feature="bottleneck", teacher_model=dense,
                               aux_loss_weight=1e-2, rng_streams=("gating",))

  def loss(params):
    return loss_fn(params, {}, batch(2), jax.random.key(1, impl="rbg"), stack_trees(experts))

  (value, (_, metrics)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      variables["params"])
  assert np.isfinite(value) and float(metrics["aux_loss"]) > 0
  assert zero_gradient_leaves(grads) == []
  # Noise weights exist only with noisy gating and learn through the noisy load.
  assert "noise_weights" in grads["decoder1_block0_moe"]["router"]


def test_measnet_exposes_routing_and_adds_its_weighted_balance_loss():
  model = DENSE["measnet"]
  variables = random_variables(model, 1, SHAPE)
  x = jnp.asarray(np.random.default_rng(3).random((2, 16, 16, 3)), jnp.float32)
  image, features = jax.jit(model.apply)(variables, x)
  assert image.shape == (2, 16, 16, 3)
  gates = np.asarray(features["router"])
  assert gates.shape == (2, 16, 16, 3)                     # per pixel, decoder1 (finest)
  np.testing.assert_allclose(gates.sum(-1), 1.0, rtol=1e-5)
  assert ((gates > 0).sum(-1) == 2).all()                  # top-2 of 3 at every pixel
  assert features["router_decoder1_block0"].shape == (2, 16, 16, 3)
  assert features["router_logits"].shape == (2, 16, 16, 3)
  # The balance loss from the gates, recomputed here (MEASNet eqs. 4-6, cv^2 = var/mean^2).
  probs = np.asarray(jax.nn.softmax(features["router_logits"], -1)).reshape(-1, 3)
  load = (np.asarray(features["router"]).reshape(-1, 3) > 0).sum(0)
  cv2 = lambda v: np.var(v) / np.mean(v) ** 2
  np.testing.assert_allclose(float(features["aux_loss"]), cv2(probs.sum(0)) + cv2(load),
                             rtol=1e-4)
  np.testing.assert_allclose(float(features["regularizer"]),
                             1e-4 * float(features["aux_loss"]), rtol=1e-6)


def test_promptir_prompts_follow_the_feature_size():
  model = PromptIR(width=4, depth=2, prompt_dim=4, prompt_size=8, num_prompts=3)
  variables = random_variables(model, 0, SHAPE)
  _, features = jax.eval_shape(model.apply, variables,
                               jax.ShapeDtypeStruct((1, 16, 24, 3), jnp.float32))
  # Level l's prompt: prompt_dim * 2^(l-1) channels at the up-sampling input's size.
  assert features["prompt2"].shape == (1, 4, 6, 8)
  assert features["prompt1"].shape == (1, 8, 12, 4)
  assert variables["params"]["prompt2"]["components"].shape == (3, 4, 4, 8)


def test_homogenization_treats_only_expert_copies_as_task_specific():
  paths = {"/".join(k.key for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(
      random_variables(STUDENT, 0, SHAPE)["params"])[0]}
  paths |= {"/".join(k.key for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(
      random_variables(DENSE["measnet"], 0, SHAPE)["params"])[0]}
  specific = sorted(p for p in paths if not shared_param(p))
  assert specific and all("_moe/experts/" in p for p in specific)
  assert "decoder1_block0_moe/experts/conv1/kernel" in specific
  assert "decoder1_block0/ffn_moe/experts/kernel1" in specific
  assert shared_param("decoder1_block0/ffn_moe/shared/kernel1")


def test_fusiondistill_homogenizes_a_measnets_experts_as_task_specific():
  """PCGrad in the FusionDistill stage projects the shared leaves; a MEASNet expert
  MLP's per-task gradients are summed as they are (g1 = (1, 0), g2 = (-1, 1): PCGrad
  gives (0.5, 1.5), the plain sum (0, 1))."""
  from fdjax.methods import fusiondistill

  tx = fusiondistill.homogenized("pcgrad", 2)["wrap_tx"](optax.sgd(-1.0))   # update = +grad
  g = jnp.asarray([[1.0, 0.0], [-1.0, 1.0]])
  grads = {"decoder1_block0": {"ffn_moe": {"experts": {"kernel1": g}, "shared": {"kernel1": g}}}}
  params = jax.tree.map(lambda x: x[0], grads)
  update, _ = tx.update(grads, tx.init(params), params)
  block = update["decoder1_block0"]["ffn_moe"]
  np.testing.assert_allclose(np.asarray(block["experts"]["kernel1"]), [0.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(np.asarray(block["shared"]["kernel1"]), [0.5, 1.5], atol=1e-6)


@pytest.mark.parametrize("renormalize", [True, False])
def test_measnet_gates_are_the_top_k_softmax_probabilities_renormalised_or_raw(renormalize):
  """MEASNet's eq. (3) as printed weights the K kept experts by their softmax
  probabilities (``renormalize_gates=False``); fdjax's default renormalises them."""
  model = MEASNet(width=4, depth=1, num_experts=4, k=2, renormalize_gates=renormalize)
  x = batch(1)["image"].astype(jnp.float32) / 255.0
  _, features = model.apply(random_variables(model, 0, SHAPE), x)
  probs = np.asarray(jax.nn.softmax(features["router_logits"], axis=-1), np.float64)
  kept = probs >= np.sort(probs, axis=-1)[..., -2:-1]            # the 2 largest per pixel
  expected = np.where(kept, probs, 0.0)
  if renormalize:
    expected /= expected.sum(-1, keepdims=True)
  np.testing.assert_allclose(np.asarray(features["router"]), expected, atol=1e-6)


def test_measnets_noisy_gating_is_refused_before_training():
  from fdjax.config_restoration import restoration_config
  from fdjax.validate import validate_config

  config = restoration_config()
  config.restoration.model = "measnet"
  config.restoration.model_options = "noisy_gating=True"
  with pytest.raises(ConfigError, match="noisy_gating: MEASNet's noisy top-K"):
    validate_config(config)


def test_model_options_are_name_value_pairs_of_python_literals():
  from fdjax.tasks.restoration_options import parse_model_options

  assert parse_model_options("num_experts=3, k=2,noisy_gating=False , tag='a'") == {
      "num_experts": 3, "k": 2, "noisy_gating": False, "tag": "a"}
  assert parse_model_options("") == parse_model_options(0) == {}
  assert parse_model_options({"k": 1}) == {"k": 1}
  for bad in ("k", "k=", "k=two", "2k=1", "k=1;j=2"):
    with pytest.raises(ConfigError, match="name=value"):
      parse_model_options(bad)


class _Regularized(nn.Module):
  """Identity restorer that asks for a regularizer of 0.25."""

  @nn.compact
  def __call__(self, x, train=False):
    scale = self.param("scale", nn.initializers.ones, ())
    return x * scale, {"regularizer": 0.25 * scale}


def test_training_losses_add_the_models_regularizer():
  model = _Regularized()
  images = batch(2)
  variables = {"params": {"scale": jnp.float32(1.0)}, "batch_stats": {}}
  loss, _ = supervised_loss(model, TASK, None)(variables["params"], {}, images,
                                               jax.random.key(0, impl="rbg"))
  # Without degradation the identity restores exactly: the loss is the regularizer alone.
  np.testing.assert_allclose(float(loss), 0.25, rtol=1e-6)
