"""fdjax.bench.torch_unet / torch_nafnet / torch_promptir: the PyTorch peers of the plain
U-Net, the NAFNet-style and the PromptIR-style U-Nets compute the same function as
fdjax's flax models."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax.models import NAFNet, PromptIR, UNet


# Loading the flax weights warns nothing (torch warned of read-only numpy views once).
@pytest.mark.filterwarnings("error::UserWarning")
@pytest.mark.parametrize("kind,width,depth,blocks,middle",
                         [("conv", 8, 2, 1, 1), ("conv", 4, 3, 2, 2), ("naf", 4, 2, 2, 2),
                          ("prompt", 4, 3, 1, 2), ("prompt", 4, 2, 1, 1)])
def test_torch_peer_matches_the_flax_model(kind, width, depth, blocks, middle):
  torch = pytest.importorskip("torch")
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
  assert np.abs(expected - x).mean() > 0.05   # the blocks change the image
  model = torch_unet.UNet(width, depth, blocks, middle, block=block,
                          before_up=before_up).load_flax(params)
  assert sum(p.numel() for p in model.parameters()) == sum(p.size for p in leaves)
  with torch.no_grad():
    got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  scale = np.abs(expected).max()   # float32 sums in different orders: relative to it
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)
