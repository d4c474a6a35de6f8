"""Random variables for tests that need distinct, non-trivial models (shared by
test_moe.py and the 8-device script moe_sharding_check.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from fdjax.train import init_variables


def random_variables(model, seed: int, shape: tuple[int, int, int]):
  """Variables of ``model`` for ``[H, W, C]`` images, with numpy-random values from
  ``seed``: He-scaled kernels, BatchNorm scale ~1 and variance in [1, 1.2], other
  leaves ~0 (std 0.2)."""
  shapes = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), shape))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      return jnp.asarray(1.0 + 0.2 * rng.random(s.shape), s.dtype)
    if "kernel" in name:
      return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1])), s.dtype)
    base = 1.0 if "scale" in name else 0.0
    return jnp.asarray(base + 0.2 * rng.normal(size=s.shape), s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)
