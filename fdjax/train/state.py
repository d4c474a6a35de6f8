"""The one training state every stage and baseline uses.

``TrainState`` holds everything that changes during training and must survive a
crash: parameters, BatchNorm statistics, optimiser state, the step counter and
the PRNG key from which each step's key is folded. Static parts (the model's
``apply`` and the optimiser) live outside, in the step function.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from fdjax.train.mesh import place, replicated


@flax.struct.dataclass
class TrainState:
  """step: int32 scalar; rng: uint32 [2] raw key (checkpointable); the rest are pytrees."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array

  @property
  def variables(self) -> dict:
    """``{'params': ..., 'batch_stats': ...}`` ready for ``model.apply``."""
    return {"params": self.params, "batch_stats": self.batch_stats}

  def loss_carry(self):
    """What the train step hands the loss function besides the parameters and takes back
    updated (its ``batch_stats`` argument and result): the BatchNorm statistics. A
    subclass may carry more, e.g. a population's discriminators
    (``fdjax.population.state.PopulationState``)."""
    return self.batch_stats

  def with_loss_carry(self, carry) -> "TrainState":
    """This state with the loss function's updated carry (inverse of ``loss_carry``)."""
    return self.replace(batch_stats=carry)


def init_variables(model: nn.Module, key: jax.Array, image_shape: tuple[int, int, int]) -> dict:
  """Model variables for inputs of ``image_shape`` (H, W, C); ``batch_stats`` may be empty."""
  variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def create_train_state(variables: dict, tx: optax.GradientTransformation, rng: jax.Array,
                       mesh=None) -> TrainState:
  """A step-0 state from ``variables`` (e.g. ``init_variables`` or a restored stage).

  ``rng`` is a raw ``uint32[2]`` key (``jax.random.PRNGKey(seed)``). With ``mesh``
  every leaf is placed replicated over it, always as a copy: the train step donates
  the state, and ``variables`` may also be passed to it as a frozen teacher (an expert
  starts from the clean model and distils from it).
  """
  state = TrainState(
      step=jnp.zeros((), jnp.int32),
      params=variables["params"],
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(variables["params"]),
      rng=jnp.asarray(rng, jnp.uint32),
  )
  if mesh is not None:
    state = place(state, replicated(mesh))
  return state
