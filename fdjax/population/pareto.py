"""The Pareto report of a population: per-member metric per objective, the
non-dominated set and the hypervolume, for metrics to MAXIMISE (e.g. accuracy).

Hypervolume: the measure of the union of the boxes ``[ref, a_i]`` (``ref`` the
reference point, default 0 in every objective), computed exactly by
inclusion-exclusion over the subsets of members, ``sum_S (-1)^(|S|+1) prod_k
(min_{i in S} a_ik - ref_k)^+``: 2^P - 1 terms, exact for any number of objectives
(P up to ~16).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np


def dominates(a, b) -> bool:
  """``a`` Pareto-dominates ``b`` (maximisation): no worse everywhere, better somewhere."""
  a, b = np.asarray(a), np.asarray(b)
  return bool(np.all(a >= b) and np.any(a > b))


def non_dominated(points) -> list[int]:
  """Indices (ascending) of the rows of ``points`` ``[P, M]`` that no other row dominates."""
  points = np.asarray(points, np.float64)
  return [i for i in range(len(points))
          if not any(dominates(points[j], points[i]) for j in range(len(points)) if j != i)]


def hypervolume(points, ref: Sequence[float] | None = None) -> float:
  """Exact hypervolume (maximisation) of ``points`` ``[P, M]`` above ``ref`` ``[M]``."""
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or not len(points):
    raise ValueError(f"hypervolume needs points [P, M], got shape {points.shape}")
  if len(points) > 16:
    raise ValueError(f"exact hypervolume by inclusion-exclusion is for P <= 16, got {len(points)}")
  ref = np.zeros(points.shape[1]) if ref is None else np.asarray(ref, np.float64)
  total = 0.0
  for r in range(1, len(points) + 1):
    for subset in itertools.combinations(range(len(points)), r):
      corner = points[list(subset)].min(axis=0)
      total += (-1) ** (r + 1) * float(np.prod(np.clip(corner - ref, 0.0, None)))
  return total


def pareto_report(metric, objectives: Sequence[str], labels: Sequence[str] | None = None,
                  ref: Sequence[float] | None = None) -> dict:
  """``{'objectives', 'members': [{'label', 'values': {objective: metric}}],
  'non_dominated': [index], 'hypervolume'}`` for ``metric`` ``[P, M]`` (maximised)."""
  metric = np.asarray(metric, np.float64)
  labels = list(labels) if labels is not None else [f"member {i}" for i in range(len(metric))]
  return {"objectives": list(objectives),
          "members": [{"label": label, "values": dict(zip(objectives, map(float, row)))}
                      for label, row in zip(labels, metric)],
          "non_dominated": non_dominated(metric),
          "hypervolume": hypervolume(metric, ref)}
