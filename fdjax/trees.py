"""Pytree helpers shared by every stage, method and population."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def stack_trees(trees: Sequence) -> object:
  """N pytrees of one structure -> one pytree whose leaves have a new leading axis N.

  Used for the frozen experts of FusionDistill, the ensemble, the MoE student's
  stacked experts and per-task gradients. Raises ValueError for an empty sequence.
  """
  trees = list(trees)
  if not trees:
    raise ValueError("stack_trees needs at least one pytree")
  return _stack(*trees)


@jax.jit
def _stack(*trees):
  """One compiled program per structure: op by op, every leaf shape compiled a stack
  and a conversion of its own (26 small compilations for the quickstart's experts)."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack_tree(tree, index: int):
  """Member ``index`` of a pytree stacked by ``stack_trees`` (leaves indexed on axis 0)."""
  return jax.tree.map(lambda leaf: leaf[index], tree)
