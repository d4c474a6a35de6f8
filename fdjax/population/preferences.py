"""Preference vectors of a population and its neighbourhoods in preference space.

Member i of a population of P optimises the objectives with weights ``w_i`` (a point
of the simplex, ``sum_k w_ik = 1``). EA-Adam (Sun et al., TIP 2024) uses two
objectives and ``w_i = (1 - i/(P-1), i/(P-1))``; for M > 2 objectives fdjax keeps
that one-parameter family as the segment from "objective 0 alone" to "the other M-1
objectives equally": ``w_i = (1 - t_i) e_0 + t_i (0, 1, ..., 1)/(M-1)``,
``t_i = i/(P-1)`` (for classification objective 0 is clean images and 1..M-1 the
degradations; member 0 is the clean model). For M = 2 both readings coincide.

Neighbourhoods (MOEA/D): the ``T`` members nearest to member i in preference space
(Euclidean, i itself first); a crossover partner is drawn from them, or from the
whole population with probability ``random_prob`` (0.3 in EA-Adam).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def preference_vectors(size: int, num_objectives: int = 2) -> np.ndarray:
  """float32 ``[size, num_objectives]``: member i's weights (see the module docstring).

  ``size`` >= 2 and ``num_objectives`` >= 2; every row sums to 1.
  """
  if size < 2 or num_objectives < 2:
    raise ValueError(f"a population needs size >= 2 and >= 2 objectives, got size={size}, "
                     f"objectives={num_objectives}")
  t = np.arange(size, dtype=np.float64) / (size - 1)
  rest = np.full(num_objectives - 1, 1.0 / (num_objectives - 1))
  weights = np.concatenate([(1.0 - t)[:, None], t[:, None] * rest[None, :]], axis=1)
  return weights.astype(np.float32)


def neighbourhoods(preferences: np.ndarray, size: int) -> np.ndarray:
  """int32 ``[P, size]``: for each member, the ``size`` members nearest in preference
  space (Euclidean; ties by index), itself first. ``1 <= size <= P``."""
  preferences = np.asarray(preferences, np.float64)
  count = preferences.shape[0]
  if not 1 <= size <= count:
    raise ValueError(f"neighbourhood size must lie in 1..{count}, got {size}")
  distances = np.linalg.norm(preferences[:, None, :] - preferences[None, :, :], axis=-1)
  # Distances equal up to float rounding (members i - 1 and i + 1 of float32 preferences
  # differ by ~1e-8) are ties, broken by index; each member comes first.
  index = np.arange(count)
  order = np.stack([np.lexsort((index, index != i, _tie_groups(distances[i])))
                    for i in range(count)])
  return order[:, :size].astype(np.int32)


def _tie_groups(values: np.ndarray, tolerance: float = 1e-6) -> np.ndarray:
  """int ``[n]``: the rank of each value's group, values within ``tolerance`` of the
  previous one in ascending order sharing a group."""
  order = np.argsort(values, kind="stable")
  steps = np.diff(values[order]) > tolerance
  groups = np.empty(len(values), np.int64)
  groups[order] = np.concatenate([[0], np.cumsum(steps)])
  return groups


def pick_partners(key: jax.Array, neighbours: jax.Array, random_prob: float = 0.3) -> jax.Array:
  """int32 ``[P]``: a crossover partner for every member, never the member itself.

  With probability ``1 - random_prob`` a uniform draw among member i's neighbours
  (``neighbours[i, 1:]``, i.e. excluding itself), else a uniform draw among all the
  other members. ``neighbours``: int ``[P, T]`` from ``neighbourhoods`` with T >= 2.
  """
  neighbours = jnp.asarray(neighbours)
  count, width = neighbours.shape
  if width < 2:
    raise ValueError("pick_partners needs neighbourhoods of size >= 2 (the member and one more)")
  k_coin, k_near, k_any = jax.random.split(key, 3)
  near = jnp.take_along_axis(
      neighbours, jax.random.randint(k_near, (count, 1), 1, width), axis=1)[:, 0]
  # any other member: draw from P-1 slots and skip over i
  other = jax.random.randint(k_any, (count,), 0, count - 1)
  anyone = other + (other >= jnp.arange(count))
  use_random = jax.random.uniform(k_coin, (count,)) < random_prob
  return jnp.where(use_random, anyone, near).astype(jnp.int32)
