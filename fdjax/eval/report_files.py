"""A study's result files, from its records (``fdjax.eval.report``'s tables).

Files written by ``write_reports``:
  results.md     the table of ``format_table`` (each metric's decimals, display units);
  results.csv    method, seeds, then ``<col>`` (mean) and ``<col>_std`` (empty for one
                 seed) at each metric's decimals, then the extra columns;
  per_level.csv  method, seed, degradation, level, normalised_level, <metric name>: the
                 synthetic degradations' levels (a real test set has no level; its
                 scores are in results.* and, per image, per_image.csv);
  results.json   everything at full precision: records, summary, extra columns.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

from fdjax.eval.report import (ACCURACY, STD_DDOF, Record, columns, extra_columns,
                               format_table, metric_tables, per_level_rows, scoring, secondary,
                               summarize, test_sets)
from fdjax.json_files import replaced
from fdjax.tasks.base import MetricSpec


def load_records(path: str) -> list[Record]:
  """Records back from a ``results.json`` (per-level values are ``[level, value]`` pairs)."""
  with open(path) as f:
    payload = json.load(f)
  return [(r["method"], r["seed"], r["results"]) for r in payload["records"]]


def write_reports(records: Sequence[Record], out_dir: str, methods: Sequence[str] | None = None,
                  extra: Mapping[str, Mapping[str, Any]] | None = None,
                  metric: MetricSpec = ACCURACY,
                  fingerprints: Mapping[str, Mapping[str, str]] | None = None,
                  metrics: Sequence[MetricSpec] | None = None,
                  test_time: str = "", note: str = "") -> dict[str, str]:
  """Writes results.md, results.csv, per_level.csv and results.json; returns their paths.

  ``fingerprints`` (``{seed dir: {stage: digest}}``, ``fdjax.study.fingerprint``) are
  recorded in results.json: which stages, made by which config, the numbers come from;
  ``test_time``: how every row's test outputs were made when not by one plain forward
  pass (e.g. 'x8 self-ensemble'), recorded in results.json and said in results.md;
  ``note``: a last paragraph of results.md (the pipeline's model selection)."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {k: os.path.join(out_dir, f) for k, f in (
      ("md", "results.md"), ("csv", "results.csv"), ("per_level", "per_level.csv"),
      ("json", "results.json"))}
  summary = summarize(records, methods, metric)
  cols, extra_cols = columns(records), extra_columns(extra)
  tables, metrics = metric_tables(records, methods, metric, metrics), list(metrics or [metric])
  sets = test_sets(records)
  with replaced(paths["md"]) as f:
    f.write(f"{metric.heading}. Columns: clean, then the plain mean over each "
            f"degradation's evaluated levels (per_level.csv lists them: its whole level "
            f"grid, or with config.eval.level_stride > 1 every stride-th level with both ends "
            f"kept, so the last step may be shorter), then their average; mean ± sample std "
            f"(ddof={STD_DDOF}) over seeds.\n\n")
    if sets:
      f.write("Test sets: " + "; ".join(
          f"{n}: {v['test_set']} ({'synthetic: clean images degraded on device' if v['synthetic'] else 'real degraded inputs'}"
          + (", the first {} of its {} images".format(*v["scored"]) if "scored" in v else "")
          + ")" for n, v in sets.items()) + ".\n\n")
    f.write(format_table(records, methods, extra, metric, metrics) + "\n")
    if test_time:
      f.write(f"\nEvery model row's test outputs: {test_time}.\n")
    if note:
      f.write(f"\n{note}\n")
  with replaced(paths["csv"], newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["method", "seeds"] + [h for _, _, label, _ in tables
                                           for h in (label, f"{label}_std")] + extra_cols)
    for method, stats in summary.items():
      row = [method, max((s["n"] for s in stats.values()), default=0)]
      for m, c, _, table in tables:
        stat = table.get(method, {}).get(c, {"mean": None, "std": None})
        row += ["" if stat[k] is None else f"{stat[k]:.{m.decimals}f}" for k in ("mean", "std")]
      row += [(extra or {}).get(method, {}).get(c, "") for c in extra_cols]
      writer.writerow(row)
  fields = ["method", "seed", "degradation", "level", "normalised_level", metric.name]
  fields += [m.name for m in metrics[1:]]
  with replaced(paths["per_level"], newline="") as f:
    writer = csv.writer(f)
    writer.writerow(fields)
    for row in per_level_rows(records, metric, metrics):
      writer.writerow([row["value"] if k == metric.name else row[k] for k in fields])
  more = {}
  if len(metrics) > 1:
    more["summary_metrics"] = {m.name: summarize(secondary(records, m), methods, m)
                               for m in metrics[1:]}
  if sets:
    more["test_sets"] = sets
  if scoring(records):
    more["scoring"] = scoring(records)
  if test_time:
    more["test_time"] = test_time
  with replaced(paths["json"]) as f:
    json.dump({**more, "columns": cols, "std_ddof": STD_DDOF, "metric": dataclasses.asdict(metric),
               "units": f"summary in {metric.unit} (x{metric.scale:g}); records as stored",
               "methods": list(summary), "summary": summary, "extra": extra or {},
               "fingerprints": fingerprints or {},
               "records": [{"method": m, "seed": s, "results": r}
                           for m, s, r in records]}, f, indent=2, default=float)
  return paths
