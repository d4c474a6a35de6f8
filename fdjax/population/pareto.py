"""The Pareto report of a population: per-member metric per objective, the
non-dominated set and the hypervolume, for metrics to MAXIMISE (e.g. accuracy).

Hypervolume: the measure of the union of the boxes ``[ref, a_i]`` (``ref`` the
reference point, default 0 in every objective), computed exactly by slicing along one
objective at a time (at most P^(M-1) boxes: any population size; before 2026-12-06
inclusion-exclusion over the 2^P - 1 subsets, which refused P > 16 after the first
epoch had trained).
"""

from __future__ import annotations

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
  """Exact hypervolume (maximisation) of ``points`` ``[P, M]`` above ``ref`` ``[M]``
  (default 0): the volume of the union of the boxes ``[ref, p]``, by slicing along the
  last objective (one slab per distinct value, each the (M-1)-dimensional volume of
  the points that reach it); any P."""
  points = np.asarray(points, np.float64)
  if points.ndim != 2 or not len(points):
    raise ValueError(f"hypervolume needs points [P, M], got shape {points.shape}")
  ref = np.zeros(points.shape[1]) if ref is None else np.asarray(ref, np.float64)
  return _sliced_volume(points, ref)


def _sliced_volume(points: np.ndarray, ref: np.ndarray) -> float:
  points = points[np.all(points > ref, axis=1)]
  if not len(points):
    return 0.0
  if points.shape[1] == 1:
    return float(points[:, 0].max() - ref[0])
  levels = np.unique(points[:, -1])[::-1]          # distinct last values, descending
  floors = np.append(levels[1:], ref[-1])
  return sum(float(top - floor) * _sliced_volume(points[points[:, -1] >= top, :-1], ref[:-1])
             for top, floor in zip(levels, floors))


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
