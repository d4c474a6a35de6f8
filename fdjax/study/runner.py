"""The per-seed runner: stages by name, each built once, in dependency order.

A ``Stage`` names what it ``requires`` (other stage names) and how it is ``build``-t
from a runner; a trained stage also names its config ``block`` and its ``shares`` so
that the study can plan its work (training images) before anything runs. Methods ask
``runner.get(name)``; the runner builds the requirements first (depth first, in the
order given), memoises every result, and tells the study progress which stage runs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

from absl import logging

from fdjax.study import fingerprint, fingerprint_fields
from fdjax.study.context import RunContext
from fdjax.study.evaluator import Evaluator
from fdjax.study.training import steps_per_epoch
from fdjax.train.stop import STOP


@dataclasses.dataclass(frozen=True)
class Stage:
  """One node of the stage graph.

  name: its directory under the seed's workdir (e.g. 'clean', 'experts/jpeg').
  requires: stage names built before it. build: ``runner -> result`` (variables, or
  anything a method needs). block: the config block with ``epochs`` (None: no
  training, e.g. a weight soup). shares: images per step in units of batch_size.
  uses: other config fields (dotted) the result depends on; levels: the degradations
  whose level ranges it depends on (None: all of the plan). Both go into its
  fingerprint (``fdjax.study.fingerprint``), less ``ignores``: fields of its block or
  of its uses (dotted: 'block.ks', 'fusion.weights', 'eval.seed') that do not change
  its result in this config (what it reports, or an option of another mode). A training
  stage's real training pairs (restoration's ``Recipe.pairs``) are those of its
  ``levels`` (``pair_names``), unless ``pairs`` is False (a recipe without them: the
  EA-Adam stages); its planned ``work`` counts them and its fingerprint records how they
  are augmented and pooled.
  """

  name: str
  requires: tuple[str, ...]
  build: Callable[["Runner"], object]
  block: str | None = None
  shares: int = 1
  uses: tuple[str, ...] = ()
  levels: tuple[str, ...] | None = None
  ignores: tuple[str, ...] = ()
  pairs: bool = True

  def pair_names(self, ctx: RunContext) -> tuple[str, ...]:
    """The degradations whose real training pairs this stage trains on (its recipe's
    ``pairs``): none without training or with ``pairs`` False, else its ``levels``."""
    if self.block is None or not self.pairs:
      return ()
    return tuple(ctx.degradations if self.levels is None else self.levels)

  def work(self, ctx: RunContext) -> int:
    """Training images this stage processes (0 without training)."""
    if self.block is None:
      return 0
    epochs = int(ctx.config[self.block].epochs)
    return (epochs * steps_per_epoch(ctx, self.shares, self.pair_names(ctx)) * self.shares
            * ctx.config.batch_size)


def closure(graph: Mapping[str, Stage], names: Sequence[str]) -> list[str]:
  """``names`` and everything they require, requirements first (depth first, stable)."""
  order: list[str] = []

  def visit(name: str, path: tuple[str, ...]):
    if name in order:
      return
    if name in path:
      raise ValueError(f"stage cycle: {' -> '.join(path + (name,))}")
    if name not in graph:
      raise ValueError(f"unknown stage {name!r}; known: {sorted(graph)}")
    for required in graph[name].requires:
      visit(required, path + (name,))
    order.append(name)

  for name in names:
    visit(name, ())
  return order


class Runner:
  """Builds and memoises the stages of one seed; evaluates models with cached results.

  Every stage's fingerprint is checked against (or recorded in) its folder before it
  is built; ``prepare`` checks a whole plan before anything trains."""

  def __init__(self, ctx: RunContext, graph: Mapping[str, Stage], progress=None):
    self.ctx, self.graph, self.progress = ctx, dict(graph), progress
    self.evaluate = Evaluator(ctx)
    self._built: dict[str, object] = {}
    self._fields: dict[int, dict[str, dict]] = {}
    self.fingerprints: dict[str, str] = {}

  def fields(self, name: str, rule: int = 0) -> dict:
    """The fingerprint fields of stage ``name`` (upstream digests included), as
    ``rule`` (``fingerprint_fields.OLDER_RULES``; 0: today's) records them, upstream too."""
    cache = self._fields.setdefault(rule, {})
    if name not in cache:
      stage = self.graph[name]
      upstream = {r: fingerprint.digest(self.fields(r, rule)) for r in stage.requires}
      cache[name] = fingerprint_fields.stage_fields(self.ctx, stage, upstream, rule=rule)
    return cache[name]

  def check(self, name: str) -> str:
    """Checks (or records) the fingerprint of ``name`` against its folder; its digest.
    A record of an older rule's fields is the same stage (re-recorded, not retrained)."""
    if name not in self.fingerprints:
      fields = self.fields(name)
      older = [self.fields(name, rule) for rule in fingerprint_fields.OLDER_RULES]
      self.fingerprints[name] = fingerprint.check_or_record(
          self.ctx.stage_dir(name), name, fields, self.ctx.config.get("on_mismatch", "stop"),
          accepted=tuple(fingerprint.digest(f) for f in older if f != fields))
    return self.fingerprints[name]

  def prepare(self, names) -> list[str]:
    """Checks the fingerprints of ``names`` and their requirements, in build order,
    before anything is built (a mismatch stops the run before any training)."""
    order = closure(self.graph, list(names))
    for name in order:
      self.check(name)
    return order

  def get(self, name: str):
    """The result of stage ``name`` (built with its requirements on first use)."""
    if name not in self._built:
      for required in closure(self.graph, [name])[:-1]:
        self.get(required)
      self.check(name)
      STOP.check()   # a stop request whose raise was lost (fdjax.train.stop)
      if self.progress is not None:
        self.progress.start(self.progress_name(name))
        logging.info("%s", self.progress.describe())
      self._built[name] = self.graph[name].build(self)
      fingerprint.record_config(self.ctx.stage_dir(name), self.ctx.config)
      if self.progress is not None:
        self.progress.finish(self.progress_name(name))
    return self._built[name]

  def progress_name(self, name: str) -> str:
    return f"seed {self.ctx.seed}: {name}"
