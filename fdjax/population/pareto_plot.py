"""The Pareto front of a population as a PNG: objective 0 (clean; distortion) against
the other objective, or the mean of the others (the degradations), members numbered and
the non-dominated ones joined, merged models marked. Matplotlib's Agg backend (files only,
``fdjax.eval.plots.pyplot``)."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from fdjax.eval.plots import pyplot, save_figure


def _xy(values: Mapping[str, float], objectives) -> tuple[float, float]:
  row = np.array([values[o] for o in objectives], np.float64)
  return float(row[0]), float(row[1:].mean())


def plot_pareto(report: dict, path: str, *, scale: float = 1.0, unit: str = "") -> str:
  """Writes ``path`` from a ``pareto.pareto_report`` (optionally with a ``'merged'``
  entry: ``{name: {'values': {objective: metric}}}``); metrics shown x ``scale``."""
  objectives = report["objectives"]
  points = np.array([_xy(m["values"], objectives) for m in report["members"]]) * scale
  front = sorted(report["non_dominated"], key=lambda i: points[i, 0])
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(5, 4))
  ax.plot(points[front, 0], points[front, 1], "-", color="0.6", zorder=1)
  ax.scatter(points[:, 0], points[:, 1], c="tab:blue", zorder=2, label="members")
  for i, (x, y) in enumerate(points):
    ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4))
  for k, (name, merged) in enumerate(sorted(report.get("merged", {}).items())):
    x, y = np.array(_xy(merged["values"], objectives)) * scale
    ax.scatter([x], [y], marker="*s^"[k % 3], s=120, zorder=3, label=name)
  suffix = f" ({unit})" if unit else ""
  ax.set_xlabel(f"{objectives[0]}{suffix}")
  others = objectives[1:]
  ax.set_ylabel(f"{others[0] if len(others) == 1 else 'mean of ' + ', '.join(others)}{suffix}")
  ax.set_title(f"population, hypervolume {report['hypervolume']:.3g}")
  ax.legend(fontsize=8)
  fig.tight_layout()
  save_figure(fig, path, dpi=120)
  return path
