"""Variation operators on model parameters: simulated binary crossover and Gaussian mutation.

As EA-Adam's official code (``EA_operator/gen.py``) applies them to networks:

* SBX (Deb & Agrawal 1995) with distribution index ``eta`` (20): ONE spread factor
  ``beta`` per parameter tensor, ``u ~ U(0, 1)``, ``beta = (2u)^(1/(eta+1))`` for
  ``u <= 0.5`` else ``(1 / (2(1-u)))^(1/(eta+1))``; children
  ``c1 = ((1+beta) p1 + (1-beta) p2) / 2`` and ``c2 = ((1-beta) p1 + (1+beta) p2) / 2``,
  so ``c1 + c2 = p1 + p2`` and ``c1 - c2 = beta (p1 - p2)``. The density of beta is
  ``(eta+1)/2 * beta^eta`` on [0, 1] and ``(eta+1)/2 * beta^-(eta+2)`` above 1.
* Gaussian mutation: each element of each convolution kernel (4-D leaf named
  ``kernel``) gets ``N(0, std^2)`` (std 0.03) added with probability ``rate`` (0.02).

Both act on a ``params`` pytree (every leaf for SBX: kernels, biases, BatchNorm scales)
and are pure functions of their key.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from fdjax.train.checkpoint import path_str


def sbx_beta(u: jax.Array, eta: float = 20.0) -> jax.Array:
  """The SBX spread factor for uniform draws ``u`` in (0, 1) (module docstring)."""
  u = jnp.clip(u, 1e-12, 1.0 - 1e-7)
  power = 1.0 / (eta + 1.0)
  return jnp.where(u <= 0.5, (2.0 * u) ** power, (1.0 / (2.0 * (1.0 - u))) ** power)


def _keys_like(key: jax.Array, tree) -> list:
  leaves, treedef = jax.tree.flatten(tree)
  return jax.tree.unflatten(treedef, list(jax.random.split(key, max(len(leaves), 1))[:len(leaves)]))


def sbx_crossover(key: jax.Array, parent1, parent2, eta: float = 20.0):
  """``(child1, child2)`` of two parameter pytrees of one structure; one beta per leaf."""
  keys = _keys_like(key, parent1)

  def leaf(k, p1, p2):
    beta = sbx_beta(jax.random.uniform(k, (), jnp.float32), eta).astype(p1.dtype)
    return (0.5 * ((1 + beta) * p1 + (1 - beta) * p2),
            0.5 * ((1 - beta) * p1 + (1 + beta) * p2))

  pairs = jax.tree.map(leaf, keys, parent1, parent2)
  first = jax.tree.map(lambda pair: pair[0], pairs, is_leaf=lambda x: isinstance(x, tuple))
  second = jax.tree.map(lambda pair: pair[1], pairs, is_leaf=lambda x: isinstance(x, tuple))
  return first, second


def is_conv_kernel(path: str, leaf) -> bool:
  """True for a convolution kernel: a 4-D leaf whose path ends in 'kernel'."""
  return path.endswith("kernel") and jnp.ndim(leaf) == 4


def gaussian_mutation(key: jax.Array, params, *, rate: float = 0.02, std: float = 0.03,
                      select: Callable[[str, object], bool] = is_conv_kernel):
  """``params`` with ``N(0, std^2)`` added to each element of the selected leaves
  (default: convolution kernels) independently with probability ``rate``."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(key, max(len(flat), 1))
  out = []
  for k, (path, leaf) in zip(keys, flat):
    if select(path_str(path), leaf):
      k_mask, k_noise = jax.random.split(k)
      mask = jax.random.uniform(k_mask, leaf.shape) < rate
      noise = std * jax.random.normal(k_noise, leaf.shape, leaf.dtype)
      leaf = leaf + jnp.where(mask, noise, jnp.zeros_like(noise))
    out.append(leaf)
  return jax.tree.unflatten(treedef, out)
