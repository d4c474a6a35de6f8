"""EA-Adam's gradient combination and the population's ``grad_fn`` for the one step.

Adam phase of EA-Adam (Sun et al., TIP 2024, official code ``optimizer/norm_grd.py``):
each objective's gradient is L2-normalised PER PARAMETER TENSOR
(``g / (||g||_2 + 1e-7)``), then the normalised gradients are summed with the
member's preference weights: ``g = sum_k w_k g_k / (||g_k|| + eps)``.

``population_grad_fn`` plugs this into ``fdjax.train.make_train_step`` (its
``grad_fn`` hook): the state's parameters are a population stacked on axis 0
(``[P, ...]`` every leaf, ``fdjax.trees.stack_trees``); each member's per-objective
gradients come from ``fdjax.moe.per_task_value_and_grad`` (one forward, one backward
per objective) of the ONE member loss function, and members are mapped with
``jax.vmap`` (or, on XLA:CPU where a vmap over stacked convolution weights becomes a
slow grouped convolution, unrolled in the same program: ``member_loop``). Every member
sees the same batch and the same step key. The optimiser then updates the stacked
tree; for element-wise optimisers (SGD, Adam, RAdam, weight decay) that is exactly P
separate single-model steps (tested).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from fdjax.moe.homogenize import per_task_value_and_grad
from fdjax.trees import stack_trees, unstack_tree

EPS = 1e-7  # as the official code


def combine_objective_grads(objective_grads, weights: jax.Array, eps: float = EPS):
  """``sum_k weights[k] * g_k / (||g_k|| + eps)`` per tensor.

  ``objective_grads``: leaves ``[M, *shape]`` (objective k's gradient in row k);
  ``weights``: float ``[M]``. Returns leaves ``[*shape]``.
  """
  weights = jnp.asarray(weights)

  def leaf(g):
    norms = jnp.sqrt(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim))))
    scale = weights / (norms + eps)
    return jnp.tensordot(scale.astype(g.dtype), g, axes=1)

  return jax.tree.map(leaf, objective_grads)


def member_grad_fn(num_objectives: int, weights) -> Callable:
  """A single model's ``grad_fn``: per-objective gradients combined with ``weights [M]``.

  The loss function must report ``metrics['task_losses']`` (one loss per objective,
  ``[M]``); the returned loss is what the loss function returns.
  """
  per_objective = per_task_value_and_grad(num_objectives, residual=False)

  def grad_fn(loss_fn):
    value_and_grads = per_objective(loss_fn)

    def combined(params, *rest):
      value, grads = value_and_grads(params, *rest)
      return value, combine_objective_grads(grads, weights)

    return combined

  return grad_fn


def map_members(fn: Callable, stacked_args: tuple, shared_args: tuple, loop: str = "auto"):
  """``stack([fn(*member_i(stacked_args), *shared_args) for i])``.

  ``loop``: 'vmap', 'unroll' or 'auto' (unroll on CPU, vmap elsewhere; see
  ``fdjax.distill.objectives.apply_experts`` for the CPU measurement).
  """
  if loop not in ("auto", "vmap", "unroll"):
    raise ValueError(f"member_loop must be 'auto', 'vmap' or 'unroll', got {loop!r}")
  if loop == "vmap" or (loop == "auto" and jax.default_backend() != "cpu"):
    return jax.vmap(fn, in_axes=(0,) * len(stacked_args) + (None,) * len(shared_args))(
        *stacked_args, *shared_args)
  count = jax.tree.leaves(stacked_args)[0].shape[0]
  return stack_trees([fn(*unstack_tree(stacked_args, i), *shared_args) for i in range(count)])


def population_grad_fn(preferences, *, trainable=None, loop: str = "auto") -> Callable:
  """``grad_fn`` for ``make_train_step`` over a population stacked on axis 0.

  ``preferences``: float ``[P, M]`` (member i's objective weights; constants of the
  program). ``trainable``: bool ``[P]`` (default all); a frozen member gets a zero
  gradient and keeps its BatchNorm statistics (chain ``freeze_members`` last in the
  optimiser so that weight decay does not move it either).

  The wrapped loss function is a SINGLE member's ``loss_fn(params, batch_stats, batch,
  key[, frozen]) -> (loss, (batch_stats, metrics))`` with ``metrics['task_losses']``
  ``[M]``. The step sees loss ``[P]`` and metrics stacked ``[P, ...]``.
  """
  preferences = jnp.asarray(preferences, jnp.float32)
  count, num_objectives = preferences.shape
  trainable = jnp.ones((count,), bool) if trainable is None else jnp.asarray(trainable, bool)

  def grad_fn(loss_fn):

    def member(params, batch_stats, weights, train, *shared):
      (loss, (new_stats, metrics)), grads = member_grad_fn(num_objectives, weights)(loss_fn)(
          params, batch_stats, *shared)
      grads = jax.tree.map(lambda g: jnp.where(train, g, jnp.zeros_like(g)), grads)
      new_stats = jax.tree.map(lambda new, old: jnp.where(train, new, old), new_stats,
                               batch_stats)
      return (loss, (new_stats, metrics)), grads

    def population(params, batch_stats, *shared):
      return map_members(member, (params, batch_stats, preferences, trainable), shared, loop)

    return population

  return grad_fn


def freeze_members(trainable) -> optax.GradientTransformation:
  """Zeroes the updates of frozen members (``trainable``: bool ``[P]``; leaves ``[P, ...]``).

  Chain it LAST (after weight decay and the optimiser) so that nothing moves them.
  """
  mask = jnp.asarray(trainable, jnp.float32)

  def update(updates, state, params=None):
    del params
    return jax.tree.map(
        lambda u: u * mask.reshape((-1,) + (1,) * (u.ndim - 1)).astype(u.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
