"""The population's training state: ONE ``TrainState`` whose parameters, BatchNorm
statistics and optimiser moments are stacked on a leading axis P (one row per member),
plus the evolution's state and, for adversarial objectives, the members' discriminators
(a second stacked pytree, ``critic``), so that one checkpoint resumes everything exactly.

``population_sharding(mesh, state)`` lays the member axis over a mesh axis named
``population`` (scalars and the evolution's small arrays replicated), for
``make_train_step(..., state_sharding=...)``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fdjax.train.mesh import two_axis_mesh
from fdjax.train.state import TrainState, create_train_state
from fdjax.trees import stack_trees

POPULATION_AXIS = "population"


@flax.struct.dataclass
class PopulationState(TrainState):
  """A ``TrainState`` of P stacked members (leaves ``[P, ...]``) with ``evolution``
  (``fdjax.population.evolution.EvolutionState``). ``step`` and ``rng`` are shared: every
  member sees the same batch and the same step key."""

  evolution: Any = None
  critic: Any = None

  @property
  def size(self) -> int:
    return jax.tree.leaves(self.params)[0].shape[0]

  def loss_carry(self):
    """The BatchNorm statistics, or with a ``critic`` (one discriminator per member and
    its optimiser state, stacked ``[P, ...]``: ``fdjax.population.adversarial``)
    ``{'batch_stats', 'critic'}``, updated by the loss function in the same step."""
    if self.critic is None:
      return self.batch_stats
    return {"batch_stats": self.batch_stats, "critic": self.critic}

  def with_loss_carry(self, carry) -> "PopulationState":
    if self.critic is None:
      return self.replace(batch_stats=carry)
    return self.replace(batch_stats=carry["batch_stats"], critic=carry["critic"])


def stack_members(members: Sequence[dict]) -> dict:
  """``[{'params', 'batch_stats'}] * P`` -> one ``{'params', 'batch_stats'}`` stacked on axis 0."""
  return stack_trees([{"params": m["params"], "batch_stats": m.get("batch_stats", {})}
                      for m in members])


def create_population_state(stacked_variables: dict, tx: optax.GradientTransformation,
                            rng: jax.Array, evolution, mesh=None,
                            critic=None) -> PopulationState:
  """A step-0 ``PopulationState``; ``tx.init`` on the stacked parameters gives stacked
  moments (element-wise optimisers). ``critic``: the members' discriminators and their
  optimiser state, stacked (``fdjax.population.adversarial.init_critic``), or None.
  With ``mesh``: every leaf replicated on it, as a copy (the step donates the state;
  ``create_train_state``)."""
  base = create_train_state(stacked_variables, tx, rng)
  state = PopulationState(step=base.step, params=base.params, batch_stats=base.batch_stats,
                          opt_state=base.opt_state, rng=base.rng, evolution=evolution,
                          critic=critic)
  if mesh is not None:
    from fdjax.train.mesh import place, replicated
    state = place(state, replicated(mesh))   # NaN fitness: no device_put across processes
  return state


def population_mesh(population_devices: int, devices=None) -> Mesh:
  """A 2-D ``('data', 'population')`` mesh: ``population_devices`` along ``population``
  (which must divide the device count), the rest along ``data``."""
  return two_axis_mesh(POPULATION_AXIS, population_devices, devices)


def population_sharding(mesh, state: PopulationState):
  """Per-leaf shardings: member-stacked leaves (leading axis P) split over ``population``;
  everything else (step, rng, optimiser counters, the evolution) replicated. The
  discriminators (``critic``, leaves ``[P, ...]``) are split like the members."""
  count = state.size
  split = NamedSharding(mesh, PartitionSpec(POPULATION_AXIS))
  whole = NamedSharding(mesh, PartitionSpec())

  def member_axis(leaf):
    return jnp.ndim(leaf) >= 1 and jnp.shape(leaf)[0] == count

  stacked = state.replace(evolution=None)
  shardings = jax.tree.map(lambda leaf: split if member_axis(leaf) else whole, stacked)
  return shardings.replace(step=whole, rng=whole,
                           evolution=jax.tree.map(lambda _: whole, state.evolution))
