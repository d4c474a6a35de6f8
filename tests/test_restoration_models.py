"""U-Net restorers (plain and NAFNet-style): shapes, features, pixel shuffle, and that
every parameter receives a gradient (no branch computed and thrown away).

Kept cheap to compile: variables come from ``random_variables`` (abstract init plus
numpy), shapes from ``jax.eval_shape``; only the gradient check compiles, once per model.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax.models import NAFNet, UNet, pixel_shuffle
from fdjax.train import init_variables
from random_weights import random_variables

SMALL = {"width": 8, "depth": 2, "blocks": 1, "middle_blocks": 1}
MODELS = {"unet": UNet(**SMALL), "nafnet": NAFNet(**SMALL)}
# For gradients (compiled): one encoder, middle and decoder block each.
TINY = {"width": 8, "depth": 1, "blocks": 1, "middle_blocks": 1}
GRAD_MODELS = {"unet": UNet(**TINY), "nafnet": NAFNet(**TINY)}


def l1_grads(model, variables, seed=0, shape=(2, 8, 8, 3)):
  """Gradients of the mean L1 distance between the model's output and a random target,
  at ``variables``, for one random input (one compilation per model)."""
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.random(shape), jnp.float32)
  target = jnp.asarray(rng.random(shape), jnp.float32)
  return _grad_fn(model)(variables, x, target)


@functools.lru_cache(maxsize=None)
def _grad_fn(model):
  def loss(params, variables, x, target):
    out, _ = model.apply({**variables, "params": params}, x, train=True)
    return jnp.mean(jnp.abs(out - target))

  return jax.jit(lambda variables, x, target: jax.grad(loss)(variables["params"], variables,
                                                             x, target))


def zero_gradient_leaves(grads):
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  return [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g))]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_output_is_an_image_of_the_input_shape_with_named_features(name):
  model = MODELS[name]
  variables = random_variables(model, 0, (8, 8, 3))
  image, features = jax.eval_shape(model.apply, variables,
                                   jax.ShapeDtypeStruct((2, 8, 12, 3), jnp.float32))
  assert image.shape == (2, 8, 12, 3) and image.dtype == jnp.float32
  assert features["bottleneck"].shape == (2, 2, 3, 32)
  assert features["encoder1"].shape == features["decoder1"].shape == (2, 8, 12, 8)
  assert features["encoder2"].shape == features["decoder2"].shape == (2, 4, 6, 16)
  assert model.stride == 4
  out = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((1, 16, 4, 3), jnp.float32))
  assert out[0].shape == (1, 16, 4, 3)


def test_no_batch_stats_and_sizes_off_the_stride_are_rejected():
  for model in MODELS.values():
    shapes = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), (4, 4, 3)))
    assert shapes["batch_stats"] == {} and {"intro", "ending"} <= set(shapes["params"])
    with pytest.raises(ValueError, match="divisible by its stride 4.*pad_to_multiple"):
      jax.eval_shape(model.apply, shapes, jax.ShapeDtypeStruct((1, 10, 8, 3), jnp.float32))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_parameter_gets_a_nonzero_gradient_from_l1(name):
  model = GRAD_MODELS[name]
  # Random weights everywhere (NAFNet's layer scales too, which start at zero).
  variables = random_variables(model, 3, (8, 8, 3))
  grads = l1_grads(model, variables)
  assert zero_gradient_leaves(grads) == []
  assert len(jax.tree.leaves(grads)) > 10
  if name == "nafnet":
    # At initialisation the layer scales are zero (every block the identity): then only
    # the scales and what lies outside the branches learn at the first step.
    def zero_scale(path, x):
      name = jax.tree_util.keystr(path)
      return jnp.zeros_like(x) if "'beta'" in name or "'gamma'" in name else x
    at_init = jax.tree_util.tree_map_with_path(zero_scale, variables)
    zero = zero_gradient_leaves(l1_grads(model, at_init))
    assert zero and all("_block" in p and "beta" not in p and "gamma" not in p for p in zero)


def test_pixel_shuffle_is_pytorchs():
  x = np.arange(2 * 3 * 2 * 8, dtype=np.float32).reshape(2, 3, 2, 8)  # C = 2 * 2 * 2
  want = np.zeros((2, 6, 4, 2), np.float32)
  for c in range(2):
    for i in range(2):
      for j in range(2):
        want[:, i::2, j::2, c] = x[..., c * 4 + i * 2 + j]
  np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x))), want)


def test_block_counts_per_level():
  model = UNet(width=4, depth=3, blocks=(1, 0, 2), middle_blocks=0, decoder_blocks=1)
  shapes = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), (8, 8, 3)))
  names = set(shapes["params"])
  assert {"encoder1_block0", "encoder3_block0", "encoder3_block1"} <= names
  assert "encoder2_block0" not in names and not any(n.startswith("middle") for n in names)
  assert {"decoder1_block0", "decoder2_block0", "decoder3_block0"} <= names
  with pytest.raises(ValueError, match="one per level"):
    jax.eval_shape(lambda: init_variables(UNet(depth=2, blocks=(1, 1, 1)), jax.random.key(0),
                                          (8, 8, 3)))


def _np_conv(x, kernel, bias, groups=1):
  """Zero-padded 'same' cross-correlation of ``x`` [H, W, Cin] with ``kernel`` [k, k,
  Cin / groups, Cout] (flax's layout), per group, in float64 loops."""
  k = kernel.shape[0]
  pad = k // 2
  xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
  h, w, cin = x.shape
  cout = kernel.shape[-1]
  per_in, per_out = cin // groups, cout // groups
  out = np.zeros((h, w, cout))
  for o in range(cout):
    g = o // per_out
    for i in range(per_in):
      for dy in range(k):
        for dx in range(k):
          out[:, :, o] += kernel[dy, dx, i, o] * xp[dy:dy + h, dx:dx + w, g * per_in + i]
  return out + bias


def _np_layer_norm(x, scale, bias, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * scale + bias


def test_naf_block_equals_a_numpy_transcription_of_nafnet_s():
  # NAFNet (Chen et al. 2022, the official NAFBlock): LayerNorm over channels (eps 1e-6),
  # 1x1 conv to 2c, depthwise 3x3, SimpleGate (first half x second half), simplified
  # channel attention (global mean, 1x1 conv, times), 1x1 conv, x + beta y; LayerNorm,
  # 1x1 conv to 2c, SimpleGate, 1x1 conv, + gamma y. Random weights everywhere, beta and
  # gamma included (they start at 0, which would hide both branches).
  from fdjax.models.nafnet import NAFBlock

  block = NAFBlock(4)
  x = np.random.default_rng(0).normal(size=(1, 5, 6, 4)).astype(np.float32)
  variables = block.init(jax.random.key(0), jnp.asarray(x))
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  variables = jax.tree.unflatten(tree, [jax.random.normal(k, l.shape) * 0.5
                                        for k, l in zip(keys, leaves)])
  got = np.asarray(block.apply(variables, jnp.asarray(x)))[0]
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  conv = lambda name, y, groups=1: _np_conv(y, p[name]["kernel"], p[name]["bias"], groups)
  gate = lambda y: y[..., :y.shape[-1] // 2] * y[..., y.shape[-1] // 2:]
  x0 = x[0].astype(np.float64)
  y = _np_layer_norm(x0, p["norm1"]["scale"], p["norm1"]["bias"])
  y = conv("dwconv", conv("conv1", y), groups=8)
  y = gate(y)
  attention = y.mean((0, 1)) @ p["sca"]["kernel"][0, 0] + p["sca"]["bias"]
  y = conv("conv3", y * attention)
  x1 = x0 + y * p["beta"]
  y = _np_layer_norm(x1, p["norm2"]["scale"], p["norm2"]["bias"])
  y = conv("conv5", gate(conv("conv4", y)))
  want = x1 + y * p["gamma"]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [4, 2])
def test_prompt_block_s_prompt_against_numpy(size):
  # PromptIR's prompt generation: weights = softmax over the N components (per image) of a
  # linear map of the features' global mean; prompt = the weighted sum of the components,
  # resized bilinearly (half-pixel centres, as torch's interpolate) to the features' size,
  # then a 3x3 convolution. Two images with different features: a softmax over the batch
  # or none at all would differ.
  from skimage.transform import resize

  from fdjax.models.promptir import PromptBlock

  block = PromptBlock(channels=4, prompt_dim=3, prompt_size=size, num_prompts=5)
  x = np.random.default_rng(0).normal(size=(2, 4, 4, 4)).astype(np.float32)
  variables = block.init(jax.random.key(0), jnp.asarray(x))
  _, prompt = block.apply(variables, jnp.asarray(x))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  logits = x.astype(np.float64).mean((1, 2)) @ p["weights"]["kernel"] + p["weights"]["bias"]
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  for b in range(2):
    mixed = np.einsum("n,nijd->ijd", weights[b], p["components"])
    if size != 4:
      mixed = resize(mixed, (4, 4, 3), order=1, mode="edge", anti_aliasing=False)
    want = _np_conv(mixed, p["prompt_conv"]["kernel"], 0.0)
    np.testing.assert_allclose(np.asarray(prompt)[b], want, rtol=1e-4, atol=1e-5)


def test_measnet_expert_mlps_against_numpy():
  # Expert e: relu(x W1_e + b1_e) W2_e + b2_e per pixel (biases random, not the zeros
  # they start at).
  from fdjax.models.measnet import ExpertMLPs

  mlps = ExpertMLPs(num_experts=3, hidden=5)
  x = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype(np.float32)
  variables = mlps.init(jax.random.key(0), jnp.asarray(x))
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  variables = jax.tree.unflatten(tree, [jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])
  got = np.asarray(mlps.apply(variables, jnp.asarray(x)))
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  for e in range(3):
    hidden = np.maximum(x @ p["kernel1"][e] + p["bias1"][e], 0.0)
    np.testing.assert_allclose(got[e], hidden @ p["kernel2"][e] + p["bias2"][e], rtol=1e-4,
                               atol=1e-4)
