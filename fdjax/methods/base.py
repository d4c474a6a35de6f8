"""What a method is: the rows it reports and the stages they need.

A method module defines one or more ``Method`` values and registers them in
``fdjax.methods.METHODS``. The pipeline only loops over seeds and methods:

* ``stages(ctx) -> {name: Stage}``: stages this method adds to the shared graph
  (``fdjax.study.stages``: clean, experts/<d>, fused/<bn>);
* ``requires(ctx) -> names``: the stages its rows need (the runner builds them and
  their requirements; the study plans its progress from them);
* ``rows(runner) -> Output``: the results rows of one seed;
* ``finalize(outputs, workdir, ctx)``: optional files from every seed's outputs (the
  experts' heatmap, router usage);
* ``models``: names a finished run can be loaded by (``fdjax.load_model``), each the
  stage directory holding the variables and, optionally, how to build its module;
* ``refused``: names that ``fdjax.load_model`` refuses (not one static model), each with
  why and what to load instead;
* ``members(ctx) -> (held, run)``: how many dense models each of its rows holds and
  runs per image (the params and relative-FLOPs columns, ``config.eval.cost_columns``);
* ``reports``: files it writes in each seed's folder that a person reads, ``{path
  relative to the seed folder: what it holds}`` (the console's list of the run's files).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence


# degradation name -> (module, or None for the task's dense model, variables): the one
# model a row runs on that degradation's test images.
RowModel = Callable[[str], tuple[Any, Any]]


def one_model(variables, model=None) -> RowModel:
  """The ``RowModel`` of a row that runs the same model on every degradation."""
  return lambda degradation: (model, variables)


@dataclasses.dataclass
class Output:
  """One seed's rows: ``[(row label, results)]``, extra columns per row label, anything
  ``finalize`` needs (``artifacts``) and, for the rows that run ONE model per image
  (not ensembles nor routed experts), ``models``: row label -> ``RowModel`` (what the
  task's example images, ``Task.report_images``, show)."""

  rows: list[tuple[str, dict]] = dataclasses.field(default_factory=list)
  extra: dict[str, dict] = dataclasses.field(default_factory=dict)
  artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)
  models: dict[str, RowModel] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Loadable:
  """A model of a finished run: its stage directory (relative to the seed's workdir),
  ``build(config, data_spec, k) -> module`` (None: the task's dense model) and
  ``locate(name, stage, config) -> stage`` where the directory depends on the run's
  config (None: ``stage``); ``locate`` raises ``fdjax.load.ModelNotInRunError`` for a
  model that run cannot have."""

  stage: str
  build: Callable | None = None
  locate: Callable[[str, str, Any], str] | None = None

  def stage_in(self, name: str, config) -> str:
    """The stage directory of model ``name`` in a run of ``config``."""
    return self.locate(name, self.stage, config) if self.locate else self.stage


def _no_stages(ctx) -> dict:
  return {}


def _one_model(ctx) -> tuple[int, int]:
  return 1, 1


@dataclasses.dataclass(frozen=True)
class Method:
  """One row family of the results table (see the module docstring)."""

  name: str
  requires: Callable[[Any], Sequence[str]]
  rows: Callable[[Any], Output]
  stages: Callable[[Any], Mapping[str, Any]] = _no_stages
  finalize: Callable[[Sequence[Output], str, Any], None] | None = None
  models: Mapping[str, Loadable] = dataclasses.field(default_factory=dict)
  refused: Mapping[str, str] = dataclasses.field(default_factory=dict)
  # Rows of the results table that show a model of ``models`` (or of ``refused``) under
  # another name, as a person copies them: {row label: model name}.
  row_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
  members: Callable[[Any], tuple[int, int]] = _one_model
  reports: Mapping[str, str] = dataclasses.field(default_factory=dict)
