"""Objectives of a classification population: one per share of a combined batch.

The batch holds ``M`` equal consecutive shares; share 0 is shown clean and share k
(1..M-1) with degradation k-1 of the level plan (at levels drawn uniformly over its
grid), so objective 0 is clean images and objective k is degradation k-1
(``objective_names``). The member loss reports the per-share mean task loss as
``metrics['task_losses']`` ``[M]`` (what ``fdjax.population.gradients`` differentiates
one by one) and returns their mean as ``loss``.
"""

from __future__ import annotations

import jax.numpy as jnp

from fdjax.train.objectives import train_apply, with_regularizer

CLEAN = "clean"


def objective_names(plan) -> tuple[str, ...]:
  """``('clean', *plan.names)``: objective k's name."""
  return (CLEAN, *plan.names)


def clean_and_combined(plan):
  """``degrade(key, images uint8 [B,H,W,3])``: the first of ``len(plan.names) + 1`` equal
  shares unchanged, the rest through ``plan.combined()`` (share k = degradation k-1)."""
  combined = plan.combined()
  shares = len(plan.names) + 1

  def degrade(key, images):
    if images.shape[0] % shares:
      raise ValueError(f"batch of {images.shape[0]} does not split into {shares} equal shares "
                       f"(clean + {plan.names})")
    size = images.shape[0] // shares
    return jnp.concatenate([images[:size], combined(key, images[size:])])

  return degrade


def share_losses(model, task, degrade, num_objectives: int):
  """A single member's loss function for the step (``fdjax.train.step`` signature) with
  ``metrics['task_losses']`` = the task loss averaged over each of ``num_objectives``
  equal shares of the batch, each plus the model's ``features['regularizer']`` when it
  returns one (``fdjax.train.objectives.with_regularizer``)."""

  def loss_fn(params, batch_stats, batch, key):
    student_input, target, _ = task.views(key, batch, degrade)
    outputs, features, batch_stats = train_apply(model, task, params, batch_stats, student_input)
    per_example = task.per_example_loss(outputs, target)
    # The model's own regularizer (MEASNet's balance loss) in every objective: the step
    # differentiates each objective apart, so a term outside them would get no gradient.
    losses = with_regularizer(jnp.mean(per_example.reshape(num_objectives, -1), axis=1),
                              features)
    return jnp.mean(losses), (batch_stats,
                              {"task_losses": losses, **task.train_metrics(outputs, target)})

  return loss_fn
