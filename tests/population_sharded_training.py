"""Shared by the population sharding checks (run on 8 simulated CPU devices): a few
population steps with the members (and any discriminators) either replicated or split
over the mesh's 'population' axis."""

import jax

from fdjax.population.state import population_sharding
from fdjax.train import make_train_step


def train_population(make_state, loss_fn, tx, grad_fn, batches, mesh, sharded: bool):
  """``make_state(mesh)`` -> a ``PopulationState`` on ``mesh``; with ``sharded`` it is
  placed by ``population_sharding``; then one step per batch. Returns (state, metrics)."""
  state = make_state(mesh)
  sharding = population_sharding(mesh, state) if sharded else None
  if sharded:
    state = jax.device_put(state, sharding)
  step = make_train_step(loss_fn, tx, mesh, state_sharding=sharding, grad_fn=grad_fn)
  for batch in batches:
    state, metrics = step(state, batch)
  return state, metrics
