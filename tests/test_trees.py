"""fdjax.trees: the one stack / unstack helper, against numpy."""

import logging

import jax
import numpy as np
import pytest

from fdjax.trees import stack_trees, unstack_tree


def _tree(rng):
  return {"conv": {"kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32),
                   "bias": rng.normal(size=(4,)).astype(np.float32)},
          "steps": [np.int32(rng.integers(100)), rng.normal(size=(2, 5)).astype(np.float32)]}


def test_stack_trees_and_unstack_tree_match_numpy():
  rng = np.random.default_rng(0)
  trees = [_tree(rng) for _ in range(3)]
  stacked = stack_trees(trees)
  assert jax.tree.structure(stacked) == jax.tree.structure(trees[0])
  for path, leaf in jax.tree_util.tree_leaves_with_path(stacked):
    want = np.stack([np.asarray(_at(t, path)) for t in trees])   # [N, *leaf shape]
    assert leaf.shape == want.shape and leaf.dtype == want.dtype
    np.testing.assert_array_equal(leaf, want)
  for i in (0, 1, 2, -1):
    member = unstack_tree(stacked, i)
    for path, leaf in jax.tree_util.tree_leaves_with_path(member):
      np.testing.assert_array_equal(leaf, _at(trees[i], path))


def _at(tree, path):
  for key in path:
    tree = tree[key.key if hasattr(key, "key") else key.idx]
  return tree


def test_stack_trees_compiles_once_per_structure_not_per_leaf():
  from fdjax import trees as trees_lib

  rng = np.random.default_rng(1)
  trees_lib._stack.clear_cache()
  records = []
  handler = logging.Handler()
  handler.emit = records.append
  logger = logging.getLogger("jax._src.interpreters.pxla")   # where JAX logs compilations
  logger.addHandler(handler)
  try:
    with jax.log_compiles(True):   # op by op: a stack (and a conversion) per leaf shape
      stack_trees([_tree(rng) for _ in range(3)])
  finally:
    logger.removeHandler(handler)
  compiled = [r.getMessage() for r in records if r.getMessage().startswith("Compiling")]
  assert len(compiled) == 1, compiled


def test_stack_trees_rejects_empty_and_mismatched_trees():
  with pytest.raises(ValueError, match="at least one"):
    stack_trees([])
  with pytest.raises(ValueError):
    stack_trees([{"a": np.zeros(2)}, {"b": np.zeros(2)}])
