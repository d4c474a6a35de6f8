"""CIFAR ResNets: parameter counts against closed forms, outputs and features."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax.models import cifar_resnet, normalize
from fdjax.train import init_variables


def closed_form_param_count(depth: int, num_classes: int, head: str) -> int:
  """He et al.'s CIFAR ResNet with 1x1-conv+BN shortcuts, counted by hand.

  conv kxk cin->cout without bias: k*k*cin*cout; BatchNorm: 2*c (scale, bias).
  """
  n = (depth - 2) // 6
  count = 3 * 3 * 3 * 16 + 2 * 16  # stem conv + BN
  cin = 16
  for cout in (16, 32, 64):
    for block in range(n):
      count += 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout
      if cin != cout:
        count += cin * cout + 2 * cout  # 1x1 projection + BN
      cin = cout
  pooled = 64 if head == "gap" else 64 * 2 * 2
  return count + pooled * num_classes + num_classes


@pytest.mark.parametrize("depth", [8, 20, 32, 56, 110])
@pytest.mark.parametrize("head", ["gap", "reference"])
def test_parameter_count_matches_closed_form(depth, head):
  model = cifar_resnet(depth, 10, head)
  variables = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), (32, 32, 3)))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  assert count == closed_form_param_count(depth, 10, head)


def test_resnet56_is_the_085m_network():
  # He et al. report 0.85M parameters for ResNet-56 on CIFAR-10.
  assert abs(closed_form_param_count(56, 10, "gap") - 0.85e6) < 0.01e6


@pytest.mark.parametrize("head,pooled_dim", [("gap", 64), ("reference", 256)])
def test_outputs_and_feature_shapes(head, pooled_dim):
  model = cifar_resnet(8, 7, head)
  variables = init_variables(model, jax.random.key(0), (32, 32, 3))
  x = jnp.ones((2, 32, 32, 3))
  logits, features = model.apply(variables, x, train=False)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert features["stem"].shape == (2, 32, 32, 16)
  assert features["stage1"].shape == (2, 32, 32, 16)
  assert features["stage2"].shape == (2, 16, 16, 32)
  assert features["stage3"].shape == (2, 8, 8, 64)
  assert features["pooled"].shape == (2, pooled_dim)
  # Post-ReLU features are non-negative.
  for name in ("stem", "stage1", "stage2", "stage3"):
    assert float(features[name].min()) >= 0.0


def test_reference_head_pools_2x2_quadrants():
  model = cifar_resnet(8, 3, "reference")
  variables = init_variables(model, jax.random.key(1), (32, 32, 3))
  x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
  _, features = model.apply(variables, x, train=False)
  stage3 = np.asarray(features["stage3"])
  # PyTorch AdaptiveAvgPool2d(2) on 8x8 -> mean of each 4x4 quadrant, flattened in NHWC order.
  expected = stage3.reshape(2, 2, 4, 2, 4, 64).mean(axis=(2, 4)).reshape(2, -1)
  np.testing.assert_allclose(features["pooled"], expected, rtol=1e-5, atol=1e-6)


def test_train_mode_updates_batch_stats():
  model = cifar_resnet(8, 10)
  variables = init_variables(model, jax.random.key(0), (32, 32, 3))
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3)) + 3.0
  _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  old = variables["batch_stats"]["stem_norm"]["mean"]
  new = updates["batch_stats"]["stem_norm"]["mean"]
  assert not np.allclose(old, new)


def test_bad_depth_and_head_raise():
  with pytest.raises(ValueError, match="6n\\+2"):
    cifar_resnet(21, 10)
  with pytest.raises(ValueError, match="head"):
    cifar_resnet(20, 10, head="avg")


def test_normalize_matches_numpy():
  images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3) * 2
  mean = np.array([125.3, 123.0, 113.9]); std = np.array([63.0, 62.1, 66.7])
  np.testing.assert_allclose(normalize(images, "cifar10"), (images - mean) / std, rtol=1e-5)
  with pytest.raises(ValueError, match="nope"):
    normalize(images, "nope")
