"""The main job: for each seed, each requested method's rows (the runner trains or
reuses the stages they need), then the tables and figures over all seeds.

Which stages a method needs lives in its module (``fdjax.methods``); the shared
stages in ``fdjax.study.stages``. This module only loops over seeds and methods.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import ml_collections
import numpy as np
from absl import logging

from fdjax import console
from fdjax import methods as methods_lib
from fdjax.config import parse_ints
from fdjax.config_fields import check_workdir_task, write_config_json
from fdjax.distributed import check_same, is_main_process, write_once
from fdjax.errors import ConfigError
from fdjax.eval import per_image as per_image_lib
from fdjax.eval import self_ensemble
from fdjax.eval import plots, report, report_files
from fdjax.json_files import remove_stale_temporaries, write_json
from fdjax.lock import workdir_lock
from fdjax.moe.cost import param_count
from fdjax.study import Runner, load_dataset, make_context
from fdjax.study.runner import closure
from fdjax.study.stages import shared_graph
from fdjax.train.progress import StudyProgress
from fdjax.validate import validate_config

MODEL_SELECTION_NOTE = {
    "last": "last checkpoint of each stage (no model selection)",
    "val": "best epoch by the task's metric on the held-out validation split (never the test set)",
}
RESULT_FILES = ("results.md", "results.csv", "per_level.csv", "results.json")


def stage_graph(ctx, methods) -> dict:
  """The shared stages plus every requested method's own."""
  graph = shared_graph(ctx)
  for method in methods:
    graph.update(method.stages(ctx))
  return graph


def planned_stages(ctx, methods) -> list:
  """``[(stage name, training images)]`` in build order for one seed."""
  graph = stage_graph(ctx, methods)
  names = closure(graph, [n for m in methods for n in m.requires(ctx)])
  return [(name, graph[name].work(ctx)) for name in names]


class _SeedProgress:
  """What the training loop sees of the study progress: one seed's stage names."""

  def __init__(self, progress: StudyProgress, runner_name):
    self.progress, self.runner_name = progress, runner_name

  def advance(self, name: str, work_done: float, *, measured: bool = True) -> None:
    self.progress.advance(self.runner_name(name), work_done, measured=measured)

  def describe(self) -> str:
    return self.progress.describe()


def run(config: ml_collections.ConfigDict, workdir: str,
        command: str | None = None) -> list[report.Record]:
  """Runs the study described by ``config`` in ``workdir``; returns the result records.
  ``command``: the command line that runs it (``fdjax.main``), recorded in ``run.json``
  (the hint of ``fdjax.load``'s errors reruns it with more methods).

  The whole config is validated first (``fdjax.validate``), then the workdir is locked
  for the run (``fdjax.lock``; a second run on it fails at once), then every planned
  stage's fingerprint is checked before anything trains. In a multi-process run every
  process runs this; process 0 holds the lock, writes the run's own files (config,
  tables, figures) and prints the table."""
  validate_config(config)
  check_same("the config", config.to_json_best_effort(sort_keys=True))
  methods = methods_lib.parse(config.methods)
  seeds = parse_ints(config.seeds, "seeds")
  with contextlib.ExitStack() as lock:
    # Process 0 holds the lock; a refusal (a run already on this workdir) stops every
    # process, not process 0 alone (distributed.write_once).
    write_once(lambda: lock.enter_context(workdir_lock(workdir)), "workdir lock")
    return _run(config, workdir, methods, seeds, command)


def _prepare(config, workdir: str, methods, seeds) -> tuple[list, dict]:
  """Every seed's ``(seed, dataset, ctx, runner)``, each runner's planned stages checked
  against their fingerprints, and ``{'seed_<s>': fingerprints}``: a mismatch in any seed
  stops the run before anything trains."""
  prepared, fingerprints = [], {}
  progress, dataset = None, None
  for seed in seeds:
    if dataset is None or config.data.validation_fraction:
      dataset = load_dataset(config, seed)  # the validation split depends on the seed
    ctx = make_context(config, os.path.join(workdir, f"seed_{seed}"), seed, dataset)
    if progress is None:  # every seed plans the same stages
      progress = StudyProgress([(f"seed {s}: {name}", work) for s in seeds
                                for name, work in planned_stages(ctx, methods)])
    runner = Runner(ctx, stage_graph(ctx, methods), progress)
    planned = runner.prepare([n for m in methods for n in m.requires(ctx)])
    _check_validation_split(config, dataset, planned)
    fingerprints[f"seed_{seed}"] = runner.fingerprints
    prepared.append((seed, dataset, ctx, runner))
  return prepared, fingerprints


def _dtype_note(model) -> str:
  """`` Computed in bfloat16 (...)`` for a model that computes in another dtype than
  float32 (``model.dtype``, ``restoration.dtype``), else ''."""
  dtype = getattr(model, "dtype", None)
  if dtype is None or np.dtype(dtype) == np.float32:
    return ""
  return (f" Computed in {np.dtype(dtype).name} (parameters, optimiser state, losses and "
          "metrics in float32).")


def _remove_temporaries(workdir: str, started: float) -> None:
  """Deletes what a killed run left half-written (``json_files.remove_stale_temporaries``),
  with one line naming how many."""
  removed = remove_stale_temporaries(workdir, started)
  if removed:
    logging.info("deleted %d temporary file(s) that an earlier, killed run left half "
                 "written (e.g. %s)", len(removed), os.path.relpath(removed[0], workdir))


def _check_validation_split(config, dataset, planned: list[str]) -> None:
  """ConfigError when the study selects epochs, or a greedy soup picks experts, on a
  validation split the data does not have (it would silently use the last epoch)."""
  if dataset.validation is not None:
    return
  needs = (["selection='val'"] if config.selection == "val" else []) + (
      ["fusion.soup='greedy'"] if config.fusion.soup == "greedy"
      and any(n.startswith("fused/") for n in planned) else [])
  if needs:
    raise ConfigError(f"{' and '.join(needs)} need{'' if len(needs) > 1 else 's'} a "
                      f"validation split, and data "
                      f"{dataset.name!r} has none",
                      hint="set data.validation_fraction > 0 (e.g. 0.1), or "
                           "--config.selection=last")


def _run(config, workdir: str, methods, seeds, command=None) -> list[report.Record]:
  started = time.time()   # files in workdir older than this are an earlier run's
  check_workdir_task(config, workdir)
  write_once(lambda: _remove_temporaries(workdir, started), "stale temporary files")
  prepared, fingerprints = _prepare(config, workdir, methods, seeds)
  # The same config over other data (a host's own copy) or other code: other stages.
  check_same("the stages' fingerprints (the data's contents, the code's rules)",
             json.dumps(fingerprints, sort_keys=True))
  # Written once every seed's stages matched: a refused run leaves the run's own config
  # (what fdjax.load_model builds a model from when its stage recorded none) as it was.
  write_once(lambda: write_config_json(workdir, config), "config.json")
  records, extra = [], []
  outputs = {m.name: [] for m in methods}
  ctx = None
  images: list[str] = []
  per_image: list = []   # (row label, seed, per-image scores): per_image.csv
  for seed, dataset, ctx, runner in prepared:
    ctx.study = _SeedProgress(runner.progress, runner.progress_name)
    write_once(lambda: _write_run_info(dataset, workdir, command), "run.json")
    logging.info("seed %d: %s, %d train / %d val / %d test, %s%d device(s); "
                 "levels %s%s", seed, dataset.name, len(dataset.train),
                 len(dataset.validation) if dataset.validation else 0,
                 # restoration: the whole clean test set, not its first size group
                 len(dataset.test_sets.get("clean") or dataset.test),
                 f"{dataset.num_classes} classes, " if dataset.num_classes else "",
                 ctx.mesh.size, ctx.plan.describe(),
                 "".join(f"; {d} tested on {t.describe()}"
                         for d, t in dataset.test_sets.items()))
    rename = lambda label: ctx.task.row_labels.get(label, label)
    row_models, seed_extra = {}, {}
    for method in methods:
      out = method.rows(runner)
      records += [(rename(label), seed, results) for label, results in out.rows]
      per_image += [(rename(label), seed, results.pop("per_image")) for label, results
                    in out.rows if "per_image" in results]  # not in results.json
      row_models.update({rename(label): m for label, m in out.models.items()})
      seed_extra.update({rename(label): columns for label, columns in out.extra.items()})
      if ctx.config.eval.get("cost_columns"):
        for label, _ in out.rows:  # a method's own cost columns (the MoE's) win
          columns = seed_extra.setdefault(rename(label), {})
          for key, value in cost_columns(ctx, method).items():
            columns.setdefault(key, value)
      outputs[method.name].append(out)
    extra.append(seed_extra)
    if seed == seeds[0] and hasattr(ctx.task, "report_images") and row_models:
      logging.info("drawing the example images of %d row(s)", len(row_models))
      images = write_once(lambda: ctx.task.report_images(ctx, row_models, workdir),
                          "images") or []
  metric = ctx.task.metric
  test_time = self_ensemble.NOTES.get(self_ensemble.configured(config), "")
  extra = report.merge_extra(extra)   # over the seeds
  note = f"Model selection: {MODEL_SELECTION_NOTE[config.selection]}" + (
      "; EA-Adam's population and fusion network keep their last epoch (an evolutionary "
      "epoch replaces members; the rows choose among them)"
      if config.selection == "val" and any(m.name.startswith("ea_adam") for m in methods)
      else "") + "." + _dtype_note(ctx.model)

  def write_results():
    report_files.write_reports(records, workdir, extra=extra or None, metric=metric,
                               fingerprints=fingerprints, metrics=ctx.task.metrics,
                               test_time=test_time, note=note)
    per_image_lib.write(workdir, per_image, [m.name for m in ctx.task.metrics])
    return plots.plot_metric_vs_level(records, workdir, metric=metric)

  logging.info("writing the tables and figures")
  figures = write_once(write_results, "results")
  for method in methods:  # in every process: a finalizer may evaluate (collectively)
    if method.finalize is not None:
      method.finalize(outputs[method.name], workdir, ctx)
  if not is_main_process():
    return records
  reports = {path: what for method in methods for path, what in method.reports.items()}
  lines = [f"{metric.heading}: clean, then the mean over each degradation's levels, then "
           "their average."]
  metrics = ctx.task.metrics
  for m in metrics:   # one table per metric: the console's width
    if m != metric:
      lines.append(f"{m.heading}:")
    lines.append(report.format_table(records, extra=extra or None, metric=metric,
                                     metrics=metrics, only=m))
  lines.append(note)
  if test_time:
    lines.append(f"Every model row's test outputs: {test_time}.")
  lines.append(_file_summary(workdir, figures, seeds, images, since=started, reports=reports))
  try:
    print("\n".join(lines), flush=True)
  except OSError:   # the console has gone away (a closed pipe): the files above hold it all
    console.silence_console()
  return records


def cost_columns(ctx, method) -> dict:
  """``{'params', 'FLOPs/img (rel.)'}`` of one row: the dense model's parameters times
  the models the row holds, and the models it runs per image (all share the dense
  model's architecture, so FLOPs relative to one dense model = that count)."""
  held, run = method.members(ctx)
  dense = param_count(ctx.template_variables())
  return {"params": held * dense, "FLOPs/img (rel.)": run}


def _file_summary(workdir: str, figures, seeds, images=(), since: float = 0.0,
                  reports=None) -> str:
  """The console's list of the run's files. Besides ``figures`` and ``images``, the
  tables and figures that methods wrote into ``workdir`` (a finalizer's
  ``router_usage.md``, ``router_usage_k1.png``): those written since ``since`` (seconds
  since the epoch; earlier ones are another run's); and the methods' ``reports``
  (``{path in a seed folder: what}``, ``Method.reports``) that the first seed holds."""
  listed = {os.path.basename(p) for p in list(figures) + list(images)} | set(RESULT_FILES)

  def written_here(suffix):
    return sorted(f for f in os.listdir(workdir) if f.endswith(suffix) and f not in listed
                  and os.path.getmtime(os.path.join(workdir, f)) >= since - 1.0)

  lines = [f"Files in {workdir}:",
           "  tables:  " + ", ".join(RESULT_FILES + tuple(
               f for f in (per_image_lib.FILE,) if os.path.exists(os.path.join(workdir, f)))
               + tuple(written_here(".md"))),
           "  figures: " + ", ".join([os.path.basename(p) for p in figures]
                                     + written_here(".png")),
           *(["  images:  " + ", ".join(os.path.basename(p) for p in images)
              + "  (example test images: input | each single-model row"
              + (f" of seed {seeds[0]}" if len(seeds) > 1 else "") + " | target)"]
             if images else []),
           *_report_lines(workdir, seeds, reports or {}),
           "  models:  " + ", ".join(f"seed_{s}/<stage>/variables" for s in seeds)
           + "  (load with fdjax.load_model(workdir, method))"]
  return "\n".join(lines)


def _report_lines(workdir: str, seeds, reports) -> list[str]:
  """``  reports: seed_0/ea_adam/pareto.json  (what it holds)`` and one line per further
  file, for those the first seed's folder holds (``seed_<s>`` with several seeds)."""
  seed = f"seed_{seeds[0]}" if len(seeds) == 1 else "seed_<s>"
  held = [(path, what) for path, what in reports.items()
          if os.path.exists(os.path.join(workdir, f"seed_{seeds[0]}", path))]
  return [f"  {'reports:' if i == 0 else ' ' * 8} {seed}/{path}  ({what})"
          for i, (path, what) in enumerate(held)]


def _write_run_info(dataset, workdir: str, command: str | None = None) -> None:
  """What ``fdjax.load_model`` needs besides the config to rebuild the model, and the
  command that ran it (when known)."""
  write_json(os.path.join(workdir, "run.json"),
             {"dataset": dataset.name, "num_classes": dataset.num_classes,
              "image_shape": list(dataset.image_shape),
              "class_names": list(dataset.class_names),
              **({"command": command} if command else {})}, indent=2)
