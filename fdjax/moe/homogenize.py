"""Per-task gradients and gradient homogenization (PCGrad, MUIRF-style meta vector).

Multi-task training sums the task gradients of the shared parameters; where two
tasks disagree (``g_i . g_j < 0``) their conflicting components cancel. Here a
task is one degradation (``fusiondistill_loss`` reports ``task_losses [N]``).
Two pieces plug into the ONE generic step (``fdjax.train.step.make_train_step``)::

    tx = optax.chain(homogenize('pcgrad', shared=lambda p: '/experts/' not in p),
                     optax.add_decayed_weights(wd), optax.radam(lr))
    step = make_train_step(loss_fn, tx, mesh, grad_fn=per_task_value_and_grad(N))

* ``per_task_value_and_grad(N)`` makes the step's gradient a stack of N task
  gradients (every leaf ``[N, *param.shape]``);
* ``homogenize(mode)``, chained FIRST, combines them into one gradient of the
  parameters' shapes:

  - ``'sum'``: ``sum_i g_i`` (the plain multi-task baseline);
  - ``'pcgrad'``: PCGrad, Yu et al. 2020, "Gradient Surgery for Multi-Task
    Learning" (Alg. 1): each ``g_i`` is projected onto the normal plane of every
    ``g_j`` it conflicts with, then the projected gradients are summed;
  - ``'meta'``: meta-vector-guided homogenization after MUIRF's MVGH (TCSVT 2026;
    only its abstract is available, so this is our reading): a meta vector ``m``
    (EMA of past combined shared gradients, kept in the optimiser state so it is
    checkpointed) stands for the consensus direction; each ``g_i`` with
    ``g_i . m < 0`` loses its component along ``m``; the results are summed and
    ``m <- decay * m + (1 - decay) * combined``.

Dot products and projections run over the SHARED parameters only (the flattened
concatenation of leaves whose '/'-joined path satisfies ``shared``); other leaves
(e.g. per-task experts, whose paths contain ``/experts/``) are summed plainly.

Implementation: every projected task gradient is a linear combination of the raw
ones, ``g_i' = sum_k C[i, k] g_k``, so PCGrad runs on the N x N Gram matrix
``K = G G^T`` (``K[i, j] = g_i . g_j``) and touches each parameter-sized array only
twice (Gram, final weighted sum): cost ``O(N^2 D)``, no concatenation.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fdjax.train.checkpoint import path_str  # the one key-path formatter ("a/b/c")
from fdjax.trees import stack_trees

_HI = jax.lax.Precision.HIGHEST  # Gram/dot products in full f32 even on TPU/GPU (TF32).


def per_task_value_and_grad(num_tasks: int, *, residual: bool = True) -> Callable:
  """A ``grad_fn`` for ``make_train_step`` giving per-task gradients stacked on axis 0.

  The loss function's metrics must hold ``task_losses`` float ``[num_tasks]``.
  ``grad_fn(loss_fn)(params, *rest)`` returns ``((loss, (batch_stats, metrics)),
  grads)`` with every leaf of ``grads`` ``[num_tasks, *param.shape]``, row i the
  gradient of task i.

  Computed as a Jacobian by reverse mode (what ``jax.jacrev`` does): ONE forward
  pass (``jax.vjp``) and one backward pass per one-hot cotangent (unrolled),
  rather than N forward passes (vmap of ``jax.grad`` over one-hot task weights).

  ``residual`` (default True): whatever the scalar ``loss`` holds beyond
  ``sum(task_losses)`` (e.g. ``fusiondistill_loss``'s router balance loss, or the
  difference to a weighted total) is differentiated too and its gradient shared
  equally (1/N) among the rows, so the rows sum to exactly ``grad(loss)``:
  ``homogenize('sum')`` then trains exactly like the default step. With
  ``residual=False`` row i is ``grad(task_losses[i])`` and ``loss`` is only reported.
  """

  def grad_fn(loss_fn: Callable) -> Callable:

    def task_vector(params, *rest):
      loss, (batch_stats, metrics) = loss_fn(params, *rest)
      task_losses = metrics["task_losses"]
      if task_losses.shape != (num_tasks,):
        raise ValueError(f"metrics['task_losses'] must have shape ({num_tasks},), "
                         f"got {task_losses.shape}")
      if residual:
        task_losses = task_losses + (loss - jnp.sum(task_losses)) / num_tasks
      return task_losses, (loss, batch_stats, metrics)

    def value_and_grads(params, *rest):
      vector, vjp_fn, (loss, batch_stats, metrics) = jax.vjp(
          lambda p: task_vector(p, *rest), params, has_aux=True)
      # One forward pass, then one backward pass per task. The backward passes are
      # unrolled rather than vmapped over one-hot cotangents: JAX has no batching rule
      # for the transpose of the vmapped expert convolutions of the MoE student.
      rows = [vjp_fn(cotangent)[0] for cotangent in jnp.eye(num_tasks, dtype=vector.dtype)]
      grads = stack_trees(rows)
      return (loss, (batch_stats, metrics)), grads

    return value_and_grads

  return grad_fn


def pcgrad_weights(gram: jax.Array) -> jax.Array:
  """PCGrad on the Gram matrix ``gram [N, N]`` (``g_i . g_j``) -> weights ``w [N]``.

  The PCGrad sum is ``sum_i g_i' = sum_k w[k] g_k``. For each task i, the other
  tasks j are visited in the FIXED order j = i+1, ..., N-1, 0, ..., i-1 (Yu et al.
  shuffle them; a cyclic order is deterministic, PRNG-free and treats no task as
  always-first); with ``g_i'`` the running projected copy and ``g_j`` the ORIGINAL
  gradient (as in the reference code): if ``g_i' . g_j < 0``,
  ``g_i' -= (g_i' . g_j) / ||g_j||^2 g_j``. Python loops over N only (unrolled).
  """
  n = gram.shape[0]
  sq = jnp.diagonal(gram)
  weights = jnp.zeros((n,), gram.dtype)
  for i in range(n):
    c = jnp.zeros((n,), gram.dtype).at[i].set(1.0)  # g_i' = c @ G
    for j in [(i + s) % n for s in range(1, n)]:
      dot = c @ gram[:, j]  # g_i' . g_j
      coef = jnp.where(dot < 0, dot / jnp.where(sq[j] > 0, sq[j], 1.0), 0.0)
      c = c.at[j].add(-coef)
    weights = weights + c
  return weights


class MetaState(NamedTuple):
  """``meta``: params-shaped EMA of the combined shared gradient (float32; a scalar
  placeholder 0 for non-shared leaves)."""
  meta: Any


def homogenize(mode: str = "pcgrad", shared: Callable[[str], bool] | None = None,
               meta_decay: float = 0.9) -> optax.GradientTransformation:
  """Combines stacked per-task gradients (leaves ``[N, *shape]``) into one gradient.

  ``mode``: 'sum' | 'pcgrad' | 'meta' (module docstring). ``shared(path)`` (default:
  every leaf shared) decides, from the '/'-joined parameter path (e.g.
  ``'stage3_moe/experts/block0/conv1/kernel'``), which leaves enter the dot
  products; the others are summed plainly. Chain it first, before weight decay and
  the optimiser. ``update(updates, state, params=None)`` returns leaves of the
  parameters' shapes and dtypes.

  'meta' at the first step (``m = 0``, or whenever ``||m|| = 0``): there is no
  consensus direction yet, so that step uses PCGrad; ``m`` then starts from its
  result. ``m`` is not bias-corrected: projections depend on its direction only.
  """
  if mode not in ("sum", "pcgrad", "meta"):
    raise ValueError(f"unknown homogenization mode {mode!r}; use 'sum', 'pcgrad' or 'meta'")
  is_shared = shared or (lambda path: True)

  def split(tree):
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [v for _, v in flat], [bool(is_shared(path_str(p))) for p, _ in flat], treedef

  def init(params):
    if mode != "meta":
      return optax.EmptyState()
    leaves, mask, treedef = split(params)
    meta = [jnp.zeros(jnp.shape(v), jnp.float32) if s else jnp.zeros((), jnp.float32)
            for v, s in zip(leaves, mask)]
    return MetaState(jax.tree_util.tree_unflatten(treedef, meta))

  def update(updates, state, params=None):
    del params
    leaves, mask, treedef = split(updates)
    if not leaves:
      return updates, state
    n = leaves[0].shape[0]
    if any(v.ndim < 1 or v.shape[0] != n for v in leaves):
      raise ValueError("homogenize expects per-task gradients stacked on a leading axis "
                       "(use grad_fn=per_task_value_and_grad(N))")
    if mode == "sum":
      return treedef.unflatten([v.sum(0) for v in leaves]), state

    flat = [v.reshape(n, -1).astype(jnp.float32) for v in leaves]  # G_leaf [N, D_leaf]
    gram = sum((jnp.matmul(g, g.T, precision=_HI) for g, s in zip(flat, mask) if s),
               jnp.zeros((n, n), jnp.float32))
    weights = pcgrad_weights(gram)  # [N]
    alpha = jnp.zeros((), jnp.float32)
    if mode == "meta":
      metas = jax.tree_util.tree_leaves(state.meta)
      m_flat = [m.reshape(-1) for m in metas]
      m_sq = sum((jnp.dot(m, m, precision=_HI) for m, s in zip(m_flat, mask) if s),
                 jnp.zeros((), jnp.float32))
      dots = sum((jnp.matmul(g, m, precision=_HI) for g, m, s in zip(flat, m_flat, mask) if s),
                 jnp.zeros((n,), jnp.float32))  # g_i . m
      first = m_sq == 0
      # g_i' = g_i - min(g_i . m, 0) / ||m||^2 m, so sum_i g_i' = sum_i g_i + alpha m.
      weights = jnp.where(first, weights, jnp.ones((n,), jnp.float32))
      alpha = jnp.where(first, 0.0, -jnp.sum(jnp.minimum(dots, 0.0)) / jnp.where(first, 1.0, m_sq))

    out, new_meta = [], []
    for i, (v, g, s) in enumerate(zip(leaves, flat, mask)):
      if not s:
        out.append(v.sum(0))
        if mode == "meta":
          new_meta.append(metas[i])
        continue
      combined = jnp.matmul(weights, g, precision=_HI)  # [D_leaf]
      if mode == "meta":
        combined = combined + alpha * m_flat[i]
        new_meta.append((meta_decay * m_flat[i] + (1.0 - meta_decay) * combined)
                        .reshape(metas[i].shape))
      out.append(combined.reshape(v.shape[1:]).astype(v.dtype))
    if mode == "meta":
      state = MetaState(jax.tree_util.tree_unflatten(treedef, new_meta))
    return treedef.unflatten(out), state

  return optax.GradientTransformation(init, update)


def homogenized_recipe(mode: str, num_tasks: int,
                       shared: Callable[[str], bool] | None = None) -> dict:
  """The ``fdjax.study.training.Recipe`` fields that train a stage with gradient
  homogenization ``mode`` over its ``num_tasks`` shares: ``grad_fn`` (per-task
  gradients) and ``wrap_tx`` (``homogenize`` chained before the stage's optimiser).
  ``{}`` for ``mode == 'none'``. The stage's loss must report ``task_losses``
  ``[num_tasks]`` (``fdjax.distill.fusiondistill_loss`` does)."""
  if mode == "none":
    return {}
  transform = homogenize(mode, shared=shared)   # raises on an unknown mode, here
  return {"grad_fn": per_task_value_and_grad(num_tasks),
          "wrap_tx": lambda tx: optax.chain(transform, tx)}
