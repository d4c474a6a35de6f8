"""The one generic jitted train step.

Every stage and baseline (clean training, experts, fused fine-tuning,
FusionDistill, Scratch, Vanilla FT, MoE students) differs only in its loss
function. A loss function has the signature::

    loss_fn(params, batch_stats, batch, key) -> (loss, (new_batch_stats, metrics))
    loss_fn(params, batch_stats, batch, key, frozen) -> ...   # with frozen teachers

where ``batch_stats`` is what the state carries for the loss function
(``TrainState.loss_carry``: the BatchNorm statistics, or more for a state that carries
more, e.g. a population's discriminators), ``batch`` is a dict of arrays sharded over
the ``data`` mesh axis, ``key``
is this step's PRNG key (``fold_in(state.rng, state.step)``), ``frozen`` is a
pytree of read-only variables (teachers), replicated and passed as a jit argument
so that they are neither differentiated nor baked into the compiled program as
constants, and ``metrics`` is a dict of scalars or small vectors. ``loss`` is a scalar
or a vector (e.g. ``[P]``: one loss per member of a population of P models stacked in
one state); the default gradient is that of ``sum(loss)``. Degradation and augmentation
happen inside the loss function, so they run on device inside this one jitted update.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from fdjax.train.mesh import DATA_AXIS, data_sharding, replicated
from fdjax.train.state import TrainState

LossFn = Callable[[Any, Any, dict, jax.Array], tuple[jax.Array, tuple[Any, dict]]]


def step_key(state: TrainState) -> jax.Array:
  """This step's key: the state's key folded with the step counter."""
  return jax.random.fold_in(state.rng, state.step)


def value_and_grad(loss_fn: LossFn) -> Callable:
  """The default gradient: ``jax.value_and_grad(loss_fn, has_aux=True)`` of ``sum(loss)``.

  ``loss`` may be a scalar or a vector, e.g. ``[P]`` for a population of P models
  stacked in one state; the gradient of a vector loss is the gradient of its sum
  (for independent members: each member's own gradient). The returned value is the
  loss as ``loss_fn`` gave it (the vector, not its sum).
  """

  def summed(params, *rest):
    loss, aux = loss_fn(params, *rest)
    return jnp.sum(loss), (loss, aux)

  def value_and_grads(params, *rest):
    (_, (loss, aux)), grads = jax.value_and_grad(summed, has_aux=True)(params, *rest)
    return (loss, aux), grads

  return value_and_grads


def check_state_sharding(mesh, state_sharding) -> None:
  """Refuses a replicated state on a mesh with a non-``data`` axis of size > 1.

  With jax/jaxlib 0.10.2 (CPU) the expert parameters of a MoE student REPLICATED on a
  2-D ``(data, expert)`` mesh get wrong gradients for the vmapped expert convolutions
  (BUILD_NOTES.md, "Known XLA issue"); sharded over ``expert`` they are right. So a
  state on such a mesh must say how it is laid out.
  """
  others = {name: size for name, size in mesh.shape.items() if name != DATA_AXIS and size > 1}
  if state_sharding is None and others:
    raise ValueError(
        f"make_train_step: the mesh has axes {others} besides '{DATA_AXIS}' but no "
        f"state_sharding was given, so the state would be replicated over them. Replicated "
        f"expert parameters on such a mesh get WRONG gradients (XLA, jax 0.10.2; see "
        f"BUILD_NOTES.md 'Known XLA issue'). Pass state_sharding, e.g. "
        f"fdjax.moe.expert_sharding(mesh, state) for a MoE student, or use the 1-D "
        f"fdjax.train.make_mesh() data mesh.")


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, mesh,
                    *, state_sharding=None, donate: bool = True,
                    grad_fn: Callable[[LossFn], Callable] = value_and_grad
                    ) -> Callable[..., tuple[TrainState, dict]]:
  """Builds ``train_step(state, batch, frozen=None) -> (state, metrics)``, jitted over ``mesh``.

  ``state_sharding``: how the state lies on ``mesh``, for its input and output. ``None``
  (default): replicated, allowed only when every mesh axis but ``data`` has size 1
  (``check_state_sharding``). Otherwise one ``jax.sharding.Sharding`` for every leaf or
  a pytree of them matching the ``TrainState`` (e.g. ``fdjax.moe.expert_sharding(mesh,
  state)``: stacked experts split over ``expert``); the state passed in must lie that
  way already (``jax.device_put(state, state_sharding)``). The batch is split along its
  leading axis over ``data``; ``frozen`` and ``metrics`` are replicated; the state is
  (by default) donated.

  ``metrics`` always holds ``loss`` (as ``loss_fn`` returns it: a scalar, or e.g. ``[P]``
  for a population), ``grad_norm`` (scalar, over all parameters: the plain gradient's
  norm, with per-task gradients that of their sum before they are combined) and ``finite`` (float32
  scalar, 1.0 when every loss element and the gradients are finite), besides what
  ``loss_fn`` reports.

  ``grad_fn(loss_fn)`` returns the function that computes ``((loss, aux), grads)``;
  the default (``value_and_grad``) differentiates ``sum(loss)``. A multi-task variant
  may return per-task gradients stacked on a leading axis, for a ``tx`` whose first
  transformation combines them (gradient homogenization, ``fdjax.moe``).
  """
  check_state_sharding(mesh, state_sharding)
  state_sharding = replicated(mesh) if state_sharding is None else state_sharding

  def train_step(state: TrainState, batch: dict, frozen=None):
    extra = () if frozen is None else (frozen,)
    (loss, (carry, metrics)), grads = grad_fn(loss_fn)(
        state.params, state.loss_carry(), batch, step_key(state), *extra)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(jax.tree.map(   # per-task rows [N, ...]: their sum's norm
        lambda g, p: g.sum(0) if g.ndim == p.ndim + 1 else g, grads, state.params))
    finite = jnp.all(jnp.isfinite(loss)) & jnp.isfinite(grad_norm)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, finite=finite.astype(jnp.float32))
    new_state = state.replace(step=state.step + 1, params=params,
                              opt_state=opt_state).with_loss_carry(carry)
    return new_state, metrics

  jitted = jax.jit(train_step,
                   in_shardings=(state_sharding, data_sharding(mesh), replicated(mesh)),
                   out_shardings=(state_sharding, replicated(mesh)),
                   donate_argnums=(0,) if donate else ())

  def step(state: TrainState, batch: dict, frozen=None):
    return jitted(state, batch, frozen)

  return step
