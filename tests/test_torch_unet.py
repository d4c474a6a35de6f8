"""fdjax.bench.torch_unet / torch_nafnet / torch_promptir / torch_moe: the PyTorch peers of
the plain U-Net, the NAFNet-style, PromptIR-style and MEASNet-style U-Nets and the
FusionDistill-MoE student compute the same function as fdjax's flax models."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax.models import NAFNet, PromptIR, UNet


def assert_twin_computes(model, leaves, x, expected):
  """The PyTorch ``model`` has as many parameters as the flax ``leaves`` and computes
  ``expected`` (NHWC) from ``x`` (NHWC), up to float32 sums in another order (relative to
  the output's scale); the blocks change the image."""
  import torch

  assert sum(p.numel() for p in model.parameters()) == sum(np.size(p) for p in leaves)
  with torch.no_grad():
    got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  assert np.abs(expected - x).mean() > 0.05
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


# Loading the flax weights warns nothing (torch warned of read-only numpy views once).
@pytest.mark.filterwarnings("error::UserWarning")
@pytest.mark.parametrize("kind,width,depth,blocks,middle",
                         [("conv", 8, 2, 1, 1), ("conv", 4, 3, 2, 2), ("naf", 4, 2, 2, 2),
                          ("prompt", 4, 3, 1, 2), ("prompt", 4, 2, 1, 1)])
def test_torch_peer_matches_the_flax_model(kind, width, depth, blocks, middle):
  pytest.importorskip("torch")
  from fdjax.bench import torch_nafnet, torch_promptir, torch_unet

  flax_class, block = {"conv": (UNet, torch_unet.ConvBlock),
                       "naf": (NAFNet, torch_nafnet.NAFBlock),
                       "prompt": (PromptIR, torch_unet.ConvBlock)}[kind]
  flax_model = flax_class(width=width, depth=depth, blocks=blocks, middle_blocks=middle)
  # PromptIR: on 3 levels components of 12x12 at the top, resized to its 8x12 features
  # (down in height only), 6x6 to 4x6 and 3x3 to 2x3 below; on 2 levels 4x4 up to 8x12
  # and 2x2 up to 4x6
  size = 12 if depth == 3 else 4
  before_up = (torch_promptir.prompt_blocks(flax_model.prompt_dim, size, flax_model.num_prompts)
               if kind == "prompt" else None)
  if kind == "prompt":
    flax_model = flax_model.clone(prompt_size=size)
  x = np.random.default_rng(0).uniform(size=(2, 16, 24, 3)).astype(np.float32)
  variables = flax_model.init(jax.random.PRNGKey(1), jnp.asarray(x))
  # random weights everywhere: biases, NAFNet's layer scales (zero at init) and its
  # LayerNorm scales (one at init) included
  leaves, tree = jax.tree_util.tree_flatten(variables["params"])
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  params = jax.tree_util.tree_unflatten(
      tree, [0.3 * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)])
  expected = np.asarray(flax_model.apply({"params": params}, jnp.asarray(x))[0])
  model = torch_unet.UNet(width, depth, blocks, middle, block=block,
                          before_up=before_up).load_flax(params)
  assert_twin_computes(model, leaves, x, expected)


# prompt_scale: expert prompts far larger than at init (std 0.02), so that pixels go to
# different experts, yet no two of a pixel's gates within 1e-4 of each other at the K-th
@pytest.mark.parametrize("kind,k,prompt_scale", [("measnet", 1, 0.5), ("measnet", 2, 0.5),
                                                 ("moe", 2, 0.1)])
def test_torch_routed_peers_match_the_flax_model_and_its_balance_loss(kind, k, prompt_scale):
  torch = pytest.importorskip("torch")
  from fdjax.bench import torch_moe, torch_unet
  from fdjax.models import MEASNet
  from fdjax.moe.unet_student import RoutedUNet

  if kind == "measnet":
    flax_model = MEASNet(width=4, depth=2, num_experts=3, k=k, mlp_expand=2, num_prompts=5)
    routed = ("decoder1_block0", "decoder2_block0")
    block_at = torch_moe.meas_blocks(3, k, 2, 5)
  else:   # routed encoder and decoder levels, one block each
    flax_model = RoutedUNet(width=4, depth=2, num_experts=3, k=k, num_prompts=5,
                            routed=("encoder2", "decoder1"))
    routed = ("encoder2_block0", "decoder1_block0")
    block_at = torch_moe.routed_blocks(("encoder2", "decoder1"), 3, k, 5)
  x = np.random.default_rng(0).uniform(size=(2, 8, 12, 3)).astype(np.float32)
  variables = flax_model.init(jax.random.PRNGKey(1), jnp.asarray(x))
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables["params"])
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  # the initial weights moved at random (biases too), the expert prompts drawn anew
  def moved(key, path, p):
    if "expert_prompts" in jax.tree_util.keystr(path):
      return prompt_scale * jax.random.normal(key, p.shape)
    return p + 0.1 * jax.random.normal(key, p.shape)

  params = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(variables["params"]), [
      moved(key, path, p) for key, (path, p) in zip(keys, leaves)])
  expected, features = flax_model.apply({"params": params}, jnp.asarray(x))
  for name in routed:
    gates = np.asarray(features[f"router_{name}"]).reshape(-1, 3)
    assert len({tuple(np.flatnonzero(g)) for g in gates}) > 1   # pixels routed apart
    probs = np.sort(np.asarray(jax.nn.softmax(features[f"router_logits_{name}"])), -1)
    assert (probs[..., 3 - k] - probs[..., 2 - k]).min() > 1e-4   # no near-ties in top-K
  model = torch_unet.UNet(4, 2, block_at=block_at).load_flax(params)
  assert_twin_computes(model, [p for _, p in leaves], x, np.asarray(expected))
  routers = torch_moe.routers(model)
  np.testing.assert_allclose(float(torch_moe.balance_loss(routers)),
                             float(features["aux_loss"]), rtol=1e-5)

  # The benchmark's training loss (L1 plus a weighted balance loss; a large weight here, so
  # that the balance term's gradient counts): the same gradient, compared by its squared
  # norm and by the expert prompts of each routed block (the routing's own parameters).
  target = np.random.default_rng(3).uniform(size=x.shape).astype(np.float32)

  def loss_fn(p):
    out, f = flax_model.apply({"params": p}, jnp.asarray(x))
    return jnp.mean(jnp.abs(out - target)) + 0.3 * f["aux_loss"]

  grads = jax.grad(loss_fn)(params)
  out = model(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
  ((out - torch.from_numpy(target)).abs().mean() + 0.3 * torch_moe.balance_loss(routers)
   ).backward()
  np.testing.assert_allclose(sum(float((p.grad ** 2).sum()) for p in model.parameters()),
                             sum(float((g ** 2).sum()) for g in jax.tree.leaves(grads)),
                             rtol=1e-4)
  def twin_order(item):   # the twin's: encoder levels, middle, decoder levels, from the top
    name = jax.tree_util.keystr(item[0])   # "['decoder1_block0_moe']['router'][...]"
    return ("encoder", "middle", "decoder").index(re.match(r"\['([a-z]+)", name)[1]), name

  flax_prompts = [g for _, g in sorted(
      ((path, g) for path, g in jax.tree_util.tree_leaves_with_path(grads)
       if "expert_prompts" in jax.tree_util.keystr(path)), key=twin_order)]
  assert len(routers) == len(flax_prompts) == 2
  for router, g in zip(routers, flax_prompts):
    np.testing.assert_allclose(router.expert_prompts.grad.numpy(), np.asarray(g), rtol=1e-3,
                               atol=1e-6 * np.abs(np.asarray(g)).max())
