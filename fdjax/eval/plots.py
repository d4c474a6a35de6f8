"""Figures: the task's metric against degradation level (paper Fig. 3) and the
experts' train-degradation x test-degradation heatmap (paper Fig. 4).

Uses matplotlib's Agg backend (files only, no display), imported on the first plot
(``pyplot``), not with this module: a fresh machine's first import builds matplotlib's
font cache and logs that at INFO, which must come after the CLI has set up the console
(``fdjax.console``), and commands that draw nothing skip the import.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from fdjax.eval import report
from fdjax.json_files import replaced
from fdjax.tasks.base import MetricSpec

X_LABELS = {
    "jpeg": "JPEG: 100 − quality (−1 = uncompressed)",
    "blur": "Gaussian blur: σ (pixels)",
    "awgn": "Gaussian noise: σ (0..255 scale)",
    "sapn": "Salt-and-pepper noise: density",
}


def x_label(name: str) -> str:
  """The x axis of ``name``'s curve: the paper's wording for its four degradations, else
  the registry's units up to their first comma ('haze: scattering coefficient beta')."""
  if name in X_LABELS:
    return X_LABELS[name]
  from fdjax.degradations import registry   # imported late: fdjax.degradations imports fdjax.eval

  units = registry.REGISTRY[name].units if name in registry.REGISTRY else ""
  return f"{name}: {units.split(',')[0]}" if units else f"{name} level"


def pyplot():
  """``matplotlib.pyplot`` on the Agg backend (files only), imported on first use."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _as_rows(per_level_records: Sequence[Any], metric: MetricSpec) -> list[dict]:
  """Per-level rows (``report.per_level_rows``); result records are converted."""
  if per_level_records and not isinstance(per_level_records[0], Mapping):
    return report.per_level_rows(per_level_records, metric)
  return list(per_level_records)


def plot_metric_vs_level(per_level_records: Sequence[Any], out_dir: str,
                         methods: Sequence[str] | None = None, band: str = "minmax",
                         dpi: int = 120, metric: MetricSpec = report.ACCURACY) -> list[str]:
  """One PNG per degradation, ``<metric.name>_<name>.png``: the metric (display units)
  against the normalised level, one line per method.

  Args:
    per_level_records: rows of ``report.per_level_rows`` (``method, seed, degradation,
      normalised_level, value``), or result records ``(method, seed, results)``.
    methods: legend order (default: first appearance).
    band: with several seeds the line is the mean over seeds and a shaded band shows
      ``'minmax'`` (min..max over seeds) or ``'std'`` (mean ± sample std).
  Returns the paths written.
  """
  if band not in ("minmax", "std"):
    raise ValueError(f"band must be 'minmax' or 'std', got {band!r}")
  rows = _as_rows(per_level_records, metric)
  order = list(dict.fromkeys(list(methods or ()) + [r["method"] for r in rows]))
  # (degradation, method) -> normalised level -> [accuracy per seed]
  curves: dict = defaultdict(lambda: defaultdict(list))
  for r in rows:
    curves[(r["degradation"], r["method"])][float(r["normalised_level"])].append(
        float(r["value"]))
  names = list(dict.fromkeys(r["degradation"] for r in rows))
  os.makedirs(out_dir, exist_ok=True)
  plt = pyplot()
  cmap = plt.get_cmap("tab20" if len(order) > 10 else "tab10")   # a colour per row
  paths = []
  for name in names:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, method in enumerate(order):
      curve = curves.get((name, method))
      if not curve:
        continue
      x = np.array(sorted(curve))
      accs = [np.asarray(curve[v]) for v in x]
      mean = np.array([a.mean() for a in accs])
      color = cmap(i % cmap.N)
      ax.plot(x, mean, color=color, lw=1.6, label=method,
              marker="o" if len(x) == 1 else None)   # one level: a point, not an empty line
      if max(len(a) for a in accs) > 1:
        if band == "minmax":
          lo, hi = np.array([a.min() for a in accs]), np.array([a.max() for a in accs])
        else:
          std = np.array([a.std(ddof=report.STD_DDOF) if len(a) > 1 else 0.0 for a in accs])
          lo, hi = mean - std, mean + std
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
    ax.set_xlabel(x_label(name))
    ax.set_ylabel(f"test {metric.label} ({metric.unit})")
    seeds = max((len(v) for m in order for v in curves.get((name, m), {}).values()), default=1)
    spread = {"minmax": "band: min–max", "std": "band: ± std"}[band]
    ax.set_title(f"{metric.label} under {name}" +
                 (f" (mean of {seeds} seeds, {spread})" if seeds > 1 else ""))
    if metric.unit == "%":
      ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = os.path.join(out_dir, f"{metric.name}_{name}.png")
    save_figure(fig, path, dpi)
    paths.append(path)
  return paths


def plot_expert_heatmap(matrix, train_names: Sequence[str], test_names: Sequence[str],
                        path: str, title: str = "Experts: Acc(All) (%)", dpi: int = 120,
                        xlabel: str = "test degradation", ylabel: str = "expert trained on",
                        scale: float = 100.0) -> str:
  """Heatmap of ``matrix`` ``[len(train_names), len(test_names)]`` (e.g. Acc(All) 0..1 of
  the expert trained on the row degradation, tested on the column degradation); cells
  show ``scale * value`` with one decimal. Returns ``path``."""
  values = scale * np.asarray(matrix, np.float64)
  if values.shape != (len(train_names), len(test_names)):
    raise ValueError(f"matrix shape {values.shape} != ({len(train_names)}, {len(test_names)})")
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(1.2 * len(test_names) + 2.4, 0.9 * len(train_names) + 1.6))
  finite = values[np.isfinite(values)]
  vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 100.0)
  image = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=max(vmax, vmin + 1e-6))
  ax.set_xticks(range(len(test_names)), test_names)
  ax.set_yticks(range(len(train_names)), train_names)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  for i in range(values.shape[0]):
    for j in range(values.shape[1]):
      v = values[i, j]
      if not np.isfinite(v):
        continue
      r, g, b, _ = image.cmap(image.norm(v))
      ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
      ax.text(j, i, f"{v:.1f}", ha="center", va="center", color=ink, fontsize=10)
  fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  save_figure(fig, path, dpi)
  return path


def save_figure(fig, path: str, dpi: int) -> None:
  """Writes ``fig`` to ``path`` (its format from the extension) whole or not at all
  (``fdjax.json_files.replaced``), then closes it."""
  try:
    with replaced(path, "wb") as f:
      fig.savefig(f, format=os.path.splitext(path)[1][1:] or "png", dpi=dpi)
  finally:
    pyplot().close(fig)
