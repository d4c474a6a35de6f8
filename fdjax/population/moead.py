"""MOEA/D selection with the normalised Tchebycheff scalarisation (EA-Adam's evolutionary
phase), on objective values only: which candidate each population slot keeps.

Objective values ``f`` are to be MINIMISED (classification: error = 1 - accuracy per
objective). Subproblem j (population slot j) has weights ``w_j``; its value for
objective vector ``f`` is the normalised Tchebycheff function

    g(f | w, z*, z_max) = max_k  w_k |f_k - z*_k| / (z_max_k - z*_k)

with ``z*`` the ideal point (the best value of each objective seen so far) and
``z_max`` the nadir point (the worst value in the current population and the
candidate); a zero range counts as 1.

``moead_select``: offspring c = 0..P-1 (child c was bred for slot c) are visited in
order; for each, the ideal and nadir points are updated with its objectives, then the
slots of its neighbourhood (nearest first, the slot itself included) are visited and
the first ``max_replacements`` of them whose Tchebycheff value the child improves
(strictly) take the child. Frozen slots are never replaced. The result is an index
per slot into ``concat(population, offspring)``: slot j keeps ``source[j] = j``, or
holds child ``source[j] - P``.
"""

from __future__ import annotations

import numpy as np


def tchebycheff(f, weights, ideal, nadir) -> np.ndarray:
  """Normalised Tchebycheff value(s): ``f`` ``[..., M]``, ``weights`` ``[..., M]``,
  ``ideal`` and ``nadir`` ``[M]`` -> ``[...]``."""
  f, weights = np.asarray(f, np.float64), np.asarray(weights, np.float64)
  span = np.asarray(nadir, np.float64) - np.asarray(ideal, np.float64)
  span = np.where(span > 0, span, 1.0)
  return np.max(weights * np.abs(f - np.asarray(ideal, np.float64)) / span, axis=-1)


def update_ideal(ideal, f) -> np.ndarray:
  """Element-wise minimum of the ideal point ``[M]`` and objective vector(s) ``[..., M]``."""
  f = np.asarray(f, np.float64).reshape(-1, np.shape(ideal)[-1])
  return np.minimum(np.asarray(ideal, np.float64), f.min(axis=0))


def nadir_point(fitness, *extra) -> np.ndarray:
  """Element-wise maximum over the rows of ``fitness`` ``[P, M]`` and any extra vectors."""
  rows = [np.asarray(fitness, np.float64).reshape(-1, np.shape(fitness)[-1])]
  rows += [np.asarray(e, np.float64).reshape(1, -1) for e in extra]
  return np.concatenate(rows).max(axis=0)


def moead_select(fitness, child_fitness, preferences, neighbours, ideal, *,
                 trainable=None, max_replacements: int = 1):
  """``(source [P] int, fitness [P, M], ideal [M], nadir [M])`` after MOEA/D replacement.

  ``fitness``: ``[P, M]`` of the current members; ``child_fitness``: ``[P, M]`` of the
  offspring (child c bred for slot c); ``preferences`` ``[P, M]``; ``neighbours`` int
  ``[P, T]`` (``fdjax.population.preferences.neighbourhoods``); ``ideal`` ``[M]`` the
  ideal point so far (e.g. ``fitness.min(0)`` at the first generation); ``trainable``
  bool ``[P]`` (False: never replaced).
  """
  fitness = np.array(fitness, np.float64)
  child_fitness = np.asarray(child_fitness, np.float64)
  preferences = np.asarray(preferences, np.float64)
  count = fitness.shape[0]
  trainable = np.ones(count, bool) if trainable is None else np.asarray(trainable, bool)
  source = np.arange(count)
  ideal = np.asarray(ideal, np.float64)
  nadir = nadir_point(fitness)
  for c in range(count):
    child = child_fitness[c]
    ideal = update_ideal(ideal, child)
    nadir = nadir_point(fitness, child)
    replaced = 0
    for j in np.asarray(neighbours)[c]:
      if replaced >= max_replacements:
        break
      if not trainable[j]:
        continue
      if tchebycheff(child, preferences[j], ideal, nadir) < tchebycheff(
          fitness[j], preferences[j], ideal, nadir):
        source[j] = count + c
        fitness[j] = child
        replaced += 1
  return source, fitness, ideal, nadir_point(fitness)
