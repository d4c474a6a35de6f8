"""fdjax.models.depthwise: the shifted-sum depthwise convolution against XLA's grouped
convolution (``flax.linen.Conv`` with ``feature_group_count`` = channels): the same
parameters and initial values, outputs and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax.models.depthwise import DepthwiseConv, depthwise_conv


@pytest.mark.parametrize("k,shape", [(3, (2, 9, 7, 6)), (5, (1, 6, 11, 4))])
def test_values_and_gradients_equal_the_grouped_convolution(k, shape):
  x = jax.random.normal(jax.random.key(0), shape)
  channels = shape[-1]
  reference = nn.Conv(channels, (k, k), padding=k // 2, feature_group_count=channels)
  mine = DepthwiseConv(channels, k)
  variables = reference.init(jax.random.key(1), x)
  # the same parameters, drawn alike from the same key
  jax.tree.map(np.testing.assert_array_equal, variables, mine.init(jax.random.key(1), x))
  # random bias too (init leaves it at zero), and a loss whose gradient varies per pixel
  variables = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape),
                           variables)
  weights = jax.random.normal(jax.random.key(3), shape)

  def loss(module, v, x):
    return jnp.sum(weights * module.apply(v, x) ** 2)

  np.testing.assert_allclose(mine.apply(variables, x), reference.apply(variables, x),
                             rtol=1e-5, atol=1e-5)
  got = jax.jit(jax.grad(lambda v, x: loss(mine, v, x), argnums=(0, 1)))(variables, x)
  want = jax.grad(lambda v, x: loss(reference, v, x), argnums=(0, 1))(variables, x)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max())


def test_bfloat16_computes_in_bfloat16_with_float32_parameters():
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 4))
  module = DepthwiseConv(4, dtype=jnp.bfloat16)
  variables = module.init(jax.random.key(1), x)
  assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  out = module.apply(variables, x)
  assert out.dtype == jnp.bfloat16
  exact = DepthwiseConv(4).apply(variables, x)
  # bfloat16 inputs and weights, float32 sums (as XLA's grouped convolution): its error
  # is that of rounding the operands and the result, not of nine bfloat16 additions
  grouped = nn.Conv(4, (3, 3), padding=1, feature_group_count=4, dtype=jnp.bfloat16)
  error = np.abs(np.asarray(out, np.float32) - exact).max()
  reference = np.abs(np.asarray(grouped.apply(variables, x), np.float32) - exact).max()
  assert 0 < error <= 1.5 * reference, (error, reference)
  grads = jax.grad(lambda v: jnp.sum(module.apply(v, x).astype(jnp.float32)))(variables)
  assert all(g.dtype == jnp.float32 and np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_a_kernel_that_is_not_odd_square_and_one_per_channel_is_refused():
  x = jnp.zeros((1, 4, 4, 3))
  for kernel in (jnp.zeros((2, 2, 1, 3)), jnp.zeros((3, 3, 1, 4)), jnp.zeros((3, 3, 3, 3))):
    with pytest.raises(ValueError, match="odd square kernel"):
      depthwise_conv(x, kernel)
