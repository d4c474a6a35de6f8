"""An exponential moving average of the parameters (Polyak averaging), kept in the
optimiser state.

``with_parameter_ema(tx, decay)`` chains ``tx`` with a transformation that passes the
updates through unchanged and keeps, in its own state, the average of the parameters
as they are after each update::

    d_n   = min(decay, (1 + n) / (10 + n))      # n = updates made before this one
    ema_n = d_n * ema_{n-1} + (1 - d_n) * params_n

(``ema_0`` = the starting parameters; ``d_n`` is TensorFlow's
``ExponentialMovingAverage`` with ``num_updates``, so that the start does not weigh on
a short stage: with decay 0.999, 768 updates would otherwise leave the starting point a
weight of 0.46.) The average lives in ``TrainState.opt_state``, so a checkpoint holds
it, a resumed stage continues it exactly, and a sharded state shards it as the
parameters (it has their tree paths). ``evaluated_variables(state)`` gives what a stage
evaluates and saves: the average where the state has one, the parameters otherwise.
BatchNorm statistics are the live model's, not averaged (the restorers have none).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class ParameterEmaState(NamedTuple):
  """count: int32 scalar, updates made; ema: the parameters' tree (their dtypes)."""

  count: jax.Array
  ema: Any


def ema_decay_at(decay: float, count) -> jax.Array:
  """The decay used for update number ``count`` (0-based): ``min(decay, (1 + count) /
  (10 + count))``."""
  count = jnp.asarray(count, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + count) / (10.0 + count))


def parameter_ema(decay: float) -> optax.GradientTransformation:
  """Keeps the average of the updated parameters; updates pass through. Last in a chain
  (it must see the final updates): use ``with_parameter_ema``."""
  if not 0.0 < decay < 1.0:
    raise ValueError(f"the parameter EMA's decay must be in (0, 1), got {decay}")

  def init(params):
    return ParameterEmaState(count=jnp.zeros((), jnp.int32),
                             ema=jax.tree.map(lambda p: jnp.array(p, copy=True), params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("parameter_ema needs the parameters: tx.update(grads, state, params)")
    d = ema_decay_at(decay, state.count)
    new = optax.apply_updates(params, updates)
    ema = jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), state.ema, new)
    return updates, ParameterEmaState(count=state.count + 1, ema=ema)

  return optax.GradientTransformation(init, update)


def with_parameter_ema(tx: optax.GradientTransformation, decay: float
                       ) -> optax.GradientTransformation:
  """``tx`` followed by ``parameter_ema(decay)``; ``tx`` itself when ``decay`` is 0."""
  if not decay:
    return tx
  return optax.chain(tx, parameter_ema(float(decay)))


def find_parameter_ema(opt_state) -> ParameterEmaState | None:
  """The ``ParameterEmaState`` inside ``opt_state`` (any nesting), or None."""
  found = [leaf for leaf in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, ParameterEmaState))
      if isinstance(leaf, ParameterEmaState)]
  if len(found) > 1:
    raise ValueError(f"the optimiser state holds {len(found)} parameter averages; expected "
                     f"at most one")
  return found[0] if found else None


def evaluated_variables(state) -> dict:
  """``{'params', 'batch_stats'}`` a stage evaluates and saves: the parameters' average
  when ``state.opt_state`` keeps one, else ``state.variables``."""
  found = find_parameter_ema(state.opt_state)
  if found is None:
    return state.variables
  return {"params": found.ema, "batch_stats": state.batch_stats}
