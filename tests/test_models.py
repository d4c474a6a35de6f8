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


def test_batchnorm_keeps_pytorch_s_running_average_and_starts_as_the_identity():
  # PyTorch's BatchNorm2d: running = 0.9 running + 0.1 batch (momentum 0.1 on the new
  # value), eps 1e-5, weight 1 and bias 0 at init. Two training passes on one batch give
  # running means 0.1 b and 0.19 b: a ratio of 1.9 in every channel, whatever b is.
  model = cifar_resnet(8, 3)
  variables = init_variables(model, jax.random.key(0), (8, 8, 3))
  for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"]):
    name = jax.tree_util.keystr(path)
    if "norm" in name and name.endswith("['scale']"):
      np.testing.assert_array_equal(leaf, 1.0, err_msg=name)
    if "norm" in name and name.endswith("['bias']"):
      np.testing.assert_array_equal(leaf, 0.0, err_msg=name)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  apply = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"])[1])
  first = apply(variables)["batch_stats"]
  second = apply({**variables, "batch_stats": first})["batch_stats"]
  m1, m2 = np.asarray(first["stem_norm"]["mean"]), np.asarray(second["stem_norm"]["mean"])
  keep = np.abs(m1) > 1e-4
  assert keep.any()
  np.testing.assert_allclose(m2[keep] / m1[keep], 1.9, rtol=1e-3)
  assert model.bn_epsilon == 1e-5


def test_published_channel_statistics():
  # CIFAR-10/100 (0..255, the widely used values of the reference code), ImageNet
  # (torchvision's 0.485/0.456/0.406 and 0.229/0.224/0.225, times 255), 'unit' (to [-1, 1]).
  from fdjax.models.preprocess import CHANNEL_STATS

  assert CHANNEL_STATS == {
      "cifar10": ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
      "cifar100": ((129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
      "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
      "unit": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5))}
  np.testing.assert_allclose(np.array(CHANNEL_STATS["imagenet"]) / 255,
                             [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]], rtol=1e-9)
