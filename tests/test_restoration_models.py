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
