"""EA-Adam's evolutionary epoch as one pure function of a key.

``evolve(key, population, fitness, state, score, cfg) -> (population, state)``:

1. partners: a preference-space neighbour of each member, or any other member with
   probability ``random_partner_prob`` (0.3);
2. crossover: with probability ``crossover_prob`` (0.9) member i's child is the first
   SBX child of (member i, partner) (``eta`` 20; the child closer to member i), else a
   copy of member i; its BatchNorm statistics are member i's;
3. mutation: with probability ``mutation_prob`` (0.2) per child, Gaussian noise
   (std ``mutation_std`` 0.03) on each conv-kernel element with probability
   ``mutation_rate`` (0.02);
4. the offspring are scored (``score(variables [P, ...]) -> objective values [P, M]``,
   to minimise, e.g. 1 - validation accuracy per objective) and MOEA/D replacement
   (``moead.moead_select``) decides which slots take which child; ideal and nadir
   points are updated as it goes.

``population`` is ``{'params', 'batch_stats'}`` stacked on axis 0 (P members). The
result depends only on ``key`` and ``score`` (which must itself be deterministic:
fixed evaluation keys). Optimiser moments stay with the slot (a replaced member
continues with the slot's Adam state).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from fdjax.population import moead
from fdjax.population.operators import gaussian_mutation, sbx_crossover
from fdjax.population.preferences import neighbourhoods, pick_partners


@dataclasses.dataclass(frozen=True)
class EvolutionConfig:
  """EA-Adam's evolutionary settings (``config.ea_adam``)."""

  neighbours: int = 3            # neighbourhood size T (the member itself included)
  random_partner_prob: float = 0.3
  crossover_prob: float = 0.9
  eta: float = 20.0
  mutation_prob: float = 0.2
  mutation_rate: float = 0.02
  mutation_std: float = 0.03
  max_replacements: int = 1

  @classmethod
  def from_config(cls, cfg) -> "EvolutionConfig":
    return cls(**{f.name: type(f.default)(cfg[f.name]) for f in dataclasses.fields(cls)})


@flax.struct.dataclass
class EvolutionState:
  """What the evolution carries between epochs (checkpointed with the train state).

  rng: uint32 ``[2]`` raw key, split at every evolutionary epoch. preferences: float32
  ``[P, M]``. trainable: bool ``[P]``. fitness: float32 ``[P, M]`` objective values (to
  minimise) of the members after the last selection (NaN before the first). ideal,
  nadir: float32 ``[M]``. generation: int32, evolutionary epochs done. replaced: int32
  ``[P]``, children taken by each slot so far.
  """

  rng: jax.Array
  preferences: jax.Array
  trainable: jax.Array
  fitness: jax.Array
  ideal: jax.Array
  nadir: jax.Array
  generation: jax.Array
  replaced: jax.Array


def init_evolution(rng, preferences, trainable) -> EvolutionState:
  preferences = jnp.asarray(preferences, jnp.float32)
  count, num_objectives = preferences.shape
  # distinct buffers for every field: the train step donates the state
  return EvolutionState(rng=jnp.array(rng, jnp.uint32), preferences=preferences,
                        trainable=jnp.asarray(trainable, bool),
                        fitness=jnp.full((count, num_objectives), jnp.nan, jnp.float32),
                        ideal=jnp.full((num_objectives,), jnp.nan, jnp.float32),
                        nadir=jnp.full((num_objectives,), jnp.nan, jnp.float32),
                        generation=jnp.zeros((), jnp.int32),
                        replaced=jnp.zeros((count,), jnp.int32))


def _take(tree, index):
  return jax.tree.map(lambda leaf: leaf[index], tree)


@jax.jit
def _gather(population, offspring, source):
  """Slot j <- ``concat(population, offspring)[source[j]]``."""
  return jax.tree.map(lambda a, b: jnp.concatenate([a, b])[source], population, offspring)


def _where_members(mask, a, b):
  return jax.tree.map(lambda x, y: jnp.where(mask.reshape((-1,) + (1,) * (x.ndim - 1)), x, y),
                      a, b)


@functools.partial(jax.jit, static_argnums=(3,))
def make_offspring(key: jax.Array, params, neighbours, cfg: EvolutionConfig):
  """One child per member (steps 1-3 of the module docstring); ``params`` leaves ``[P, ...]``."""
  count = jax.tree.leaves(params)[0].shape[0]
  k_partner, k_cross, k_sbx, k_mutate, k_noise = jax.random.split(key, 5)
  partners = pick_partners(k_partner, neighbours, cfg.random_partner_prob)
  children = jax.vmap(lambda k, a, b: sbx_crossover(k, a, b, cfg.eta)[0])(
      jax.random.split(k_sbx, count), params, _take(params, partners))
  crossed = jax.random.uniform(k_cross, (count,)) < cfg.crossover_prob
  children = _where_members(crossed, children, params)
  mutated = jax.vmap(lambda k, p: gaussian_mutation(k, p, rate=cfg.mutation_rate,
                                                    std=cfg.mutation_std))(
      jax.random.split(k_noise, count), children)
  mutate = jax.random.uniform(k_mutate, (count,)) < cfg.mutation_prob
  return _where_members(mutate, mutated, children)


def evolve(key: jax.Array, population: dict, fitness, state: EvolutionState,
           score: Callable[[dict], np.ndarray], cfg: EvolutionConfig):
  """``(population, state)`` after one evolutionary epoch (module docstring).

  ``fitness``: float ``[P, M]`` objective values (to minimise) of ``population`` as it
  is now (after the gradient epoch). ``state.rng`` is not used here (the caller splits
  it and passes ``key``).
  """
  preferences = np.asarray(state.preferences)
  neighbours = neighbourhoods(preferences, min(cfg.neighbours, preferences.shape[0]))
  offspring = {"params": make_offspring(key, population["params"], neighbours, cfg),
               "batch_stats": population["batch_stats"]}
  child_fitness = np.asarray(score(offspring), np.float64)
  fitness = np.asarray(fitness, np.float64)
  previous_ideal = np.asarray(state.ideal, np.float64)
  ideal = np.where(np.isnan(previous_ideal), np.inf, previous_ideal)
  ideal = moead.update_ideal(ideal, fitness)
  source, fitness, ideal, nadir = moead.moead_select(
      fitness, child_fitness, preferences, neighbours, ideal,
      trainable=np.asarray(state.trainable), max_replacements=cfg.max_replacements)
  population = _gather(population, offspring, jnp.asarray(source))
  count = preferences.shape[0]
  state = state.replace(
      fitness=jnp.asarray(fitness, jnp.float32), ideal=jnp.asarray(ideal, jnp.float32),
      nadir=jnp.asarray(nadir, jnp.float32), generation=state.generation + 1,
      replaced=state.replaced + jnp.asarray(source != np.arange(count), jnp.int32))
  return population, state


def evolutionary_epoch(train_state, score: Callable, cfg: EvolutionConfig,
                       generations: int = 1):
  """A population train state (``fdjax.population.state.PopulationState``) after one
  evolutionary epoch of ``generations`` generations: the current members scored, then per
  generation the evolution key split (the new key kept in the state) and ``evolve`` run on
  the members and fitness the last one left (the official code's EA epoch runs 200).
  Returns ``(train_state, info)`` with ``info``: ``fitness`` before and after."""
  evolution = train_state.evolution
  population = {"params": train_state.params, "batch_stats": train_state.batch_stats}
  before = np.asarray(score(population), np.float64)
  fitness = before
  for _ in range(generations):
    rng, key = jax.random.split(jnp.asarray(evolution.rng, jnp.uint32))
    population, evolution = evolve(key, population, fitness, evolution.replace(rng=rng), score,
                                   cfg)
    fitness = np.asarray(evolution.fitness, np.float64)
  new_state = train_state.replace(params=population["params"],
                                  batch_stats=population["batch_stats"], evolution=evolution)
  return new_state, {"fitness_before": before.tolist(),
                     "fitness": np.asarray(evolution.fitness).tolist()}
