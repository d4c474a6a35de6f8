"""fdjax.models.materialize: an exact identity that stops XLA:CPU from recomputing a
ResNet's residual stream inside its backward pass."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdjax.models import cifar_resnet
from fdjax.models import resnet
from fdjax.models.materialize import materialize


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.int32])
def test_values_are_exactly_the_input(dtype):
  x = np.array([[-0.0, 1.5, -2.25], [3.0, 0.0, -7.0]])
  if jnp.issubdtype(dtype, jnp.floating):
    x[0, 1] = np.nan
  x = jnp.asarray(x, dtype)
  for first in (1, -1):   # both branches of the cond
    x_first = x.at[0, 0].set(jnp.asarray(first, dtype))
    y = jax.jit(materialize)(x_first)
    np.testing.assert_array_equal(np.asarray(y, np.float64), np.asarray(x_first, np.float64))
    assert y.dtype == x.dtype
  z = jax.jit(materialize)(jnp.asarray([-0.0, 0.0], jnp.float32))
  assert list(np.signbit(np.asarray(z))) == [True, False]


def test_anchor_sets_only_the_branch():
  x = jnp.asarray([[-1.0, 2.0], [3.0, -4.0]])
  for anchor in (jnp.asarray([0.5, 1.0]), jnp.asarray([-0.5]), jnp.asarray(-0.0)):
    np.testing.assert_array_equal(np.asarray(jax.jit(materialize)(x, anchor)), np.asarray(x))
  assert materialize(x, jnp.ones((0,)), backend="cpu") is x


def test_gradient_is_the_identity():
  x = jnp.asarray([[-1.0, 2.0], [3.0, -4.0]])
  w = jnp.asarray([[0.5, -1.5], [2.0, 3.0]])
  g = jax.grad(lambda v: jnp.sum(materialize(v) * w))(x)
  np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
  g_vmap = jax.vmap(jax.grad(lambda v, u: jnp.sum(materialize(v) * u)))(x, w)
  np.testing.assert_array_equal(np.asarray(g_vmap), np.asarray(w))


def test_other_backends_get_the_array_itself():
  x = jnp.ones((2, 3))
  assert materialize(x, backend="gpu") is x
  assert materialize(x, backend="tpu") is x
  assert materialize(jnp.ones((0,)), backend="cpu").shape == (0,)


def _max_convolutions_read_by_one_fusion(model):
  """Compiles a ResNet's parameter gradient on CPU and returns the largest number of
  convolution results that one fusion of the entry computation reads."""
  x = jnp.ones((4, 16, 16, 3))
  labels = jnp.zeros((4,), jnp.int32)
  variables = model.init(jax.random.PRNGKey(0), x, train=False)

  def loss(params):
    (logits, _), _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                 x, train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  text = jax.jit(jax.grad(loss)).lower(variables["params"]).compile().as_text()
  entry = text[text.index("\nENTRY"):]
  convolutions = set(re.findall(r"%([\w.-]+) = \S+ convolution\(", entry))
  assert convolutions, "no convolution in the compiled program: the test reads nothing"
  worst = 0
  for line in entry.splitlines():
    fusion = re.match(r"\s*(?:ROOT )?%[\w.-]+ = \S+ fusion\((.*?)\), kind", line)
    if fusion:
      operands = re.findall(r"%([\w.-]+)", fusion.group(1))
      worst = max(worst, sum(name in convolutions for name in operands))
  return worst


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks XLA:CPU's fusion")
def test_backward_fusions_do_not_recompute_the_residual_stream(monkeypatch):
  """With the block outputs materialised, a fusion reads at most the two convolutions of
  one block (its second convolution and the shortcut's); without, the transposes of the
  weight gradients recompute every block of the stage before them (6 for ResNet-20)."""
  model = cifar_resnet(20, 10)
  assert _max_convolutions_read_by_one_fusion(model) <= 2
  monkeypatch.setattr(resnet, "materialize", lambda x, **_: x)
  assert _max_convolutions_read_by_one_fusion(model) >= 4  # the test can see the chain


def test_inference_program_has_no_cut():
  """Only training passes get the cut: an inference program (and so its FLOP count, which
  ``fdjax.moe.cost`` reads from XLA) is the same on every backend."""
  model = cifar_resnet(8, 10)
  x = jnp.ones((2, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(0), x, train=False)

  def ops(train):
    fn = jax.jit(lambda v: model.apply(v, x, train=train, mutable=["batch_stats"])[0][0])
    return set(re.findall(r"stablehlo\.(\w+)", fn.lower(variables).as_text()))

  assert "case" not in ops(False)
  assert ("case" in ops(True)) == (jax.default_backend() == "cpu")
