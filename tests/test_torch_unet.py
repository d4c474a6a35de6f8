"""fdjax.bench.torch_unet: the PyTorch peer of the plain U-Net computes the same function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax.models import UNet


# Loading the flax weights warns nothing (torch warned of read-only numpy views once).
@pytest.mark.filterwarnings("error::UserWarning")
@pytest.mark.parametrize("width,depth,blocks,middle", [(8, 2, 1, 1), (4, 3, 2, 2)])
def test_torch_unet_matches_the_flax_unet(width, depth, blocks, middle):
  torch = pytest.importorskip("torch")
  from fdjax.bench import torch_unet

  flax_model = UNet(width=width, depth=depth, blocks=blocks, middle_blocks=middle)
  x = np.random.default_rng(0).uniform(size=(2, 16, 24, 3)).astype(np.float32)
  variables = flax_model.init(jax.random.PRNGKey(1), jnp.asarray(x))
  # random weights everywhere, biases included (init leaves them at zero)
  leaves, tree = jax.tree_util.tree_flatten(variables["params"])
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  params = jax.tree_util.tree_unflatten(
      tree, [0.1 * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves)])
  expected = np.asarray(flax_model.apply({"params": params}, jnp.asarray(x))[0])
  model = torch_unet.UNet(width, depth, blocks, middle).load_flax(params)
  assert sum(p.numel() for p in model.parameters()) == sum(p.size for p in leaves)
  with torch.no_grad():
    got = model(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  scale = np.abs(expected).max()   # float32 sums in different orders: relative to it
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)
