"""The one generic jitted train step.

Every stage and baseline (clean training, experts, fused fine-tuning,
FusionDistill, Scratch, Vanilla FT, MoE students) differs only in its loss
function. A loss function has the signature::

    loss_fn(params, batch_stats, batch, key) -> (loss, (new_batch_stats, metrics))
    loss_fn(params, batch_stats, batch, key, frozen) -> ...   # with frozen teachers

where ``batch`` is a dict of arrays sharded over the ``data`` mesh axis, ``key``
is this step's PRNG key (``fold_in(state.rng, state.step)``), ``frozen`` is a
pytree of read-only variables (teachers), replicated and passed as a jit argument
so that they are neither differentiated nor baked into the compiled program as
constants, and ``metrics`` is a dict of scalars. Degradation and augmentation happen inside the loss function,
so they run on device inside this one jitted update.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from fdjax.train.mesh import data_sharding, replicated
from fdjax.train.state import TrainState

LossFn = Callable[[Any, Any, dict, jax.Array], tuple[jax.Array, tuple[Any, dict]]]


def step_key(state: TrainState) -> jax.Array:
  """This step's key: the state's key folded with the step counter."""
  return jax.random.fold_in(state.rng, state.step)


def value_and_grad(loss_fn: LossFn) -> Callable:
  """The default gradient: ``jax.value_and_grad(loss_fn, has_aux=True)``."""
  return jax.value_and_grad(loss_fn, has_aux=True)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, mesh,
                    *, donate: bool = True, grad_fn: Callable[[LossFn], Callable] = value_and_grad
                    ) -> Callable[..., tuple[TrainState, dict]]:
  """Builds ``train_step(state, batch, frozen=None) -> (state, metrics)``, jitted over ``mesh``.

  The state is replicated and (by default) donated; the batch is split along its
  leading axis. ``metrics`` always holds ``loss``, ``grad_norm`` and ``finite``
  (1.0 when the loss and gradients are finite), besides what ``loss_fn`` reports.

  ``grad_fn(loss_fn)`` returns the function that computes ``((loss, aux), grads)``;
  the default is ``jax.value_and_grad``. A multi-task variant may return per-task
  gradients stacked on a leading axis, for a ``tx`` whose first transformation
  combines them (gradient homogenization, ``fdjax.moe``).
  """

  def train_step(state: TrainState, batch: dict, frozen=None):
    extra = () if frozen is None else (frozen,)
    (loss, (batch_stats, metrics)), grads = grad_fn(loss_fn)(
        state.params, state.batch_stats, batch, step_key(state), *extra)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm,
                   finite=jnp.isfinite(loss + grad_norm).astype(jnp.float32))
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, metrics

  jitted = jax.jit(train_step,
                   in_shardings=(replicated(mesh), data_sharding(mesh), replicated(mesh)),
                   out_shardings=(replicated(mesh), replicated(mesh)),
                   donate_argnums=(0,) if donate else ())

  def step(state: TrainState, batch: dict, frozen=None):
    return jitted(state, batch, frozen)

  return step
