"""The study engine: a run's context, the one stage trainer, the shared stage graph,
the per-seed runner that trains what the requested methods need, and the evaluator.

A method (``fdjax.methods``) asks the runner for stages by name; the runner trains
each once (or reuses it from disk) in dependency order and reports study progress.
"""

from fdjax.study.context import RunContext, load_dataset, make_context
from fdjax.study.runner import Runner, Stage
from fdjax.study.training import Recipe, is_complete, load_stage, train_stage

__all__ = ["Recipe", "RunContext", "Runner", "Stage", "is_complete", "load_dataset",
           "load_stage", "make_context", "train_stage"]
