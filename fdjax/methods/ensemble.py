"""Ensemble: every expert predicts, the task combines them (plurality vote with a
summed-softmax tie-break for classification)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fdjax.distill import apply_experts
from fdjax.methods.base import Method, Output
from fdjax.study import stages
from fdjax.trees import stack_trees


def member_outputs(task, model, stacked, images) -> jax.Array:
  """``[N, B, ...]``: every member of ``stacked`` (variables stacked on axis 0) predicts
  the same uint8 ``images``."""
  n = jax.tree.leaves(stacked)[0].shape[0]
  return apply_experts(lambda v, x: task.predict(model, v, x), stacked,
                       jnp.broadcast_to(images, (n, *images.shape)))


@functools.lru_cache(maxsize=8)
def ensemble_predictor(task, model):
  """``predict(stacked_variables, images_uint8) -> outputs`` of the combined members."""

  def predict(stacked, images):
    return task.ensemble(member_outputs(task, model, stacked, images))

  return predict


def _rows(runner) -> Output:
  ctx = runner.ctx
  ties = getattr(ctx.task, "ensemble_ties", "paper_text")
  name = "ensemble" if ties == "paper_text" else f"ensemble_{ties}"   # its own cache
  results = runner.evaluate(name, stack_trees(stages.experts(runner)),
                            predict=ensemble_predictor(ctx.task, ctx.model))
  return Output([("Ensemble", results)])


METHOD = Method("ensemble", requires=stages.expert_names, rows=_rows,
                members=lambda ctx: (len(ctx.degradations), len(ctx.degradations)))
