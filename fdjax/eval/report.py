"""Result tables: the clean metric and its mean over each degradation's evaluated levels
(Acc(All) for accuracy), over methods and seeds.

A result record is ``(method, seed, results)`` with ``results`` as returned by
``fdjax.eval.levels.evaluate_all`` (the metric as stored, e.g. accuracy 0..1). Reports
show ``metric.scale * value`` in ``metric.unit`` (a ``fdjax.tasks.MetricSpec``;
default: top-1 accuracy in percent).
With several seeds of a method a cell reads ``mean ± std``, where std is the SAMPLE
standard deviation (``numpy.std(..., ddof=1)``, as ``torch.std``, the usual reading
of "± std over 3 runs"); with one seed the cell is the plain value.

Restoration results carry more (``fdjax.eval.levels.evaluate_all``): each degradation's
test set and whether it is synthetic or real (column labels read e.g. ``rain (rain100l,
real)``, and results.json lists them under ``test_sets``), a column per explicitly listed
evaluation level (``denoise@25``), and secondary metrics (``task.metrics[1:]``, e.g.
SSIM) as further columns ``SSIM <column>``, each shown with its metric's decimals.
Results scored in more than one way (``results['scoring']``: e.g. rain on the Y channel,
denoise on RGB) name each task column's space in its label (``rain (rain100l, real, Y)``,
``SSIM rain (Y)``; a level column ``denoise@25`` is scored as its task's column) and in
results.json (``scoring``).

The files of a study (results.md, .csv, .json, per_level.csv) are written by
``fdjax.eval.report_files``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from fdjax import degradations
from fdjax.tasks.base import MetricSpec
from fdjax.tasks.classification import ClassificationTask

STD_DDOF = 1  # sample standard deviation over seeds
STANDARD_NAMES = ("jpeg", "blur", "awgn", "sapn")  # column order of the paper's table

Record = tuple[str, int, Mapping[str, Any]]
ACCURACY: MetricSpec = ClassificationTask.metric


def method_order(records: Sequence[Record], methods: Sequence[str] | None = None) -> list[str]:
  """``methods`` that have records, in that order, then any others by first appearance."""
  present = list(dict.fromkeys(r[0] for r in records))
  first = [m for m in (methods or ()) if m in present]
  return first + [m for m in present if m not in first]


def degradation_names(records: Sequence[Record]) -> list[str]:
  """Degradations present in any record: the paper's four in order, then any others."""
  found = [k for r in records for k, v in r[2].items() if isinstance(v, Mapping)
           and "all" in v]
  found = list(dict.fromkeys(found))
  return [n for n in STANDARD_NAMES if n in found] + [n for n in found if n not in STANDARD_NAMES]


def _entry(records: Sequence[Record], name: str) -> Mapping[str, Any]:
  return next((r[2][name] for r in records if isinstance(r[2].get(name), Mapping)), {})


def columns(records: Sequence[Record]) -> list[str]:
  """Table columns: ``clean``, the degradations present (each followed by one column per
  explicitly listed evaluation level, ``<name>@<level>``, and one per named set of a
  combined test set, ``<name>[<set>]``), ``avg``."""
  cols = ["clean"] if any("clean" in r[2] for r in records) else []
  for name in degradation_names(records):
    cols.append(name)
    if _entry(records, name).get("explicit") and len(_entry(records, name)["per_level"]) > 1:
      cols += [f"{name}@{level:g}" for level, _ in _entry(records, name)["per_level"]]
    cols += [f"{name}[{part}]" for part in _entry(records, name).get("per_set", {})]
  if any(r[2].get("avg") is not None for r in records):
    cols.append("avg")
  return cols


def scoring(records: Sequence[Record]) -> dict:
  """``{column: 'Y' | 'RGB' | ...}``: how each column was scored (the first record that
  says; ``{}`` when none does: every column plain RGB)."""
  return next((dict(r[2]["scoring"]) for r in records if r[2].get("scoring")), {})


def column_label(records: Sequence[Record], column: str, *, details: bool = True) -> str:
  """``column``, with its test set and kind when the results name them (``details``)
  and how it was scored when the results were scored in more than one way
  (``'rain (rain100l, real, Y)'``; not repeated on the level columns, ``'denoise@25'``)."""
  entry = _entry(records, column) if details else {}
  notes = ([entry["test_set"], "synthetic" if entry["synthetic"] else "real"]
           if "test_set" in entry else [])
  if "scored" in entry:
    notes.insert(1, "first {} of {}".format(*entry["scored"]))
  space = scoring(records).get(column)
  notes += [space] if space else []
  return f"{column} ({', '.join(notes)})" if notes else column


def test_sets(records: Sequence[Record]) -> dict:
  """``{degradation: {'test_set', 'synthetic'(, 'scored': [n, N])}}`` for results that
  name them ('scored': only the first n of the set's N images were scored)."""
  return {n: {k: _entry(records, n)[k] for k in ("test_set", "synthetic", "scored")
              if k in _entry(records, n)}
          for n in degradation_names(records) if "test_set" in _entry(records, n)}


def column_value(results: Mapping[str, Any], column: str) -> float | None:
  """The stored metric of one column (``clean``, a degradation's mean over levels,
  ``<degradation>@<level>``, ``<degradation>[<set>]``, ``avg``) or None."""
  if column.endswith("]") and "[" in column:   # '<degradation>[<test set>]'
    name, _, part = column[:-1].partition("[")
    value = results.get(name)
    value = value.get("per_set", {}).get(part) if isinstance(value, Mapping) else None
    return None if value is None else float(value)
  name, at, level = column.partition("@")
  value = results.get(name)
  if at and isinstance(value, Mapping):
    value = next((v for lv, v in value.get("per_level", []) if f"{lv:g}" == level), None)
  elif isinstance(value, Mapping):
    value = value.get("all")
  return None if value is None else float(value)


def secondary(records: Sequence[Record], metric: MetricSpec) -> list[Record]:
  """The records of a secondary metric: ``results['metrics'][metric.name]`` per record."""
  return [(m, s, r["metrics"][metric.name]) for m, s, r in records
          if metric.name in r.get("metrics", {})]


def metric_tables(records, methods, metric, metrics
                  ) -> list[tuple[MetricSpec, str, str, dict]]:
  """``[(metric, column, label, summary)]`` over the headline's columns then every
  secondary metric's (labels prefixed with the metric's label)."""
  out = []
  for m in [metric] + [x for x in (metrics or ())[1:]]:
    recs = records if m is metric else secondary(records, m)
    if not recs:
      continue
    summary = summarize(recs, methods, m)
    for c in columns(recs):
      label = (column_label(records, c) if m is metric
               else f"{m.label} {column_label(records, c, details=False)}")
      out.append((m, c, label, summary))
  return out


def summarize(records: Sequence[Record], methods: Sequence[str] | None = None,
              metric: MetricSpec = ACCURACY) -> dict:
  """``{method: {column: {'mean', 'std', 'n', 'values', 'seeds'}}}`` in display units.

  ``std`` is ``np.std(values, ddof=STD_DDOF)`` for n >= 2 seeds, else None.
  """
  cols = columns(records)
  summary = {}
  for method in method_order(records, methods):
    rows = [r for r in records if r[0] == method]
    summary[method] = {}
    for col in cols:
      pairs = [(r[1], column_value(r[2], col)) for r in rows]
      pairs = [(s, metric.display(v)) for s, v in pairs if v is not None]
      values = [v for _, v in pairs]
      summary[method][col] = {
          "mean": float(np.mean(values)) if values else None,
          "std": float(np.std(values, ddof=STD_DDOF)) if len(values) > 1 else None,
          "n": len(values), "values": values, "seeds": [s for s, _ in pairs]}
  return summary


def format_cell(stat: Mapping[str, Any], decimals: int = 1) -> str:
  """``'87.3 ± 0.4'`` (several seeds), ``'87.3'`` (one) or ``'–'`` (missing), with
  ``decimals`` digits."""
  if stat["mean"] is None:
    return "–"
  if stat["std"] is None:
    return f"{stat['mean']:.{decimals}f}"
  return f"{stat['mean']:.{decimals}f} ± {stat['std']:.{decimals}f}"


def format_extra(value: Any) -> str:
  """Extra column values: strings as given, ints with separators, floats to 3 digits."""
  if value is None:
    return "–"
  if isinstance(value, (bool, str)):
    return str(value)
  if isinstance(value, (int, np.integer)):
    return f"{int(value):,}"
  return f"{float(value):.3g}"


def merge_extra(per_seed: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict:
  """One seed's extra columns ``{row: {column: value}}`` per seed -> the table's: a value
  every seed shares as it is; floats that differ (routing accuracy) their mean over the
  seeds that have them, like the metric columns; other values that differ (EA-Adam's
  best member, the fusion network's alpha) each seed's, joined by '/' in seed order."""
  merged: dict[str, dict[str, Any]] = {}
  for extra in per_seed:
    for row, columns in extra.items():
      for column, value in columns.items():
        merged.setdefault(row, {}).setdefault(column, []).append(value)
  out: dict[str, dict[str, Any]] = {}
  for row, columns in merged.items():
    out[row] = {}
    for column, values in columns.items():
      if all(v == values[0] for v in values):
        out[row][column] = values[0]
      elif all(isinstance(v, (float, np.floating)) for v in values):
        out[row][column] = float(np.mean(values))
      else:
        out[row][column] = "/".join(format_extra(v) for v in values)
  return out


def extra_columns(extra: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
  """The extra columns' names (``{row: {column: value}}``), in first-seen order."""
  return list(dict.fromkeys(k for cols in (extra or {}).values() for k in cols))


def format_table(records: Sequence[Record], methods: Sequence[str] | None = None,
                 extra: Mapping[str, Mapping[str, Any]] | None = None,
                 metric: MetricSpec = ACCURACY,
                 metrics: Sequence[MetricSpec] | None = None,
                 only: MetricSpec | None = None) -> str:
  """A markdown table: one row per method, the metric in display units (its decimals).

  ``extra``: ``{method: {column: value}}`` appended after the accuracy columns (e.g.
  parameter count, relative inference cost of a mixture-of-experts student).
  ``metrics``: the task's metrics (headline first); the others add their columns.
  ``only``: one of ``metrics``: its columns alone (and ``extra`` with the headline),
  the console's one table per metric.
  """
  summary = summarize(records, methods, metric)
  tables, extra_cols = metric_tables(records, methods, metric, metrics), extra_columns(extra)
  if only is not None:
    tables = [t for t in tables if t[0] == only]
    extra_cols = extra_cols if only == metric else []
  seeds = {m: max((s["n"] for s in summary[m].values()), default=0) for m in summary}
  header = ["method", "seeds"] + [label for _, _, label, _ in tables] + extra_cols
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|"]
  for method, stats in summary.items():
    cells = [method, str(seeds[method])] + [
        format_cell(table[method][c], m.decimals) if method in table
        else "–" for m, c, _, table in tables]
    cells += [format_extra((extra or {}).get(method, {}).get(c)) for c in extra_cols]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def per_level_rows(records: Sequence[Record], metric: MetricSpec = ACCURACY,
                   metrics: Sequence[MetricSpec] = ()) -> list[dict]:
  """One dict per (method, seed, degradation, level): ``method, seed, degradation,
  level, normalised_level`` (``degradations.normalised_level``) and ``value`` (display
  units, e.g. accuracy in %), plus ``<metric name>`` for every secondary metric."""
  rows = []
  for method, seed, results in records:
    for name in degradation_names([(method, seed, results)]):
      for i, (level, value) in enumerate(results[name]["per_level"]):
        row = {"method": method, "seed": seed, "degradation": name, "level": float(level),
               "normalised_level": float(degradations.normalised_level(name, float(level))),
               "value": metric.display(value)}
        for m in metrics[1:]:
          other = results.get("metrics", {}).get(m.name, {}).get(name)
          row[m.name] = m.display(other["per_level"][i][1]) if other else None
        rows.append(row)
  return rows
