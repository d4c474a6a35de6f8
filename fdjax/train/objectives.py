"""The supervised loss for the generic train step (see ``step.py`` for the signature).

The task (``fdjax.tasks``) makes the training views of a batch on device (flip,
degradation, crop, cutout for classification) and gives the per-example loss; this
module only averages it.
"""

from __future__ import annotations

import jax.numpy as jnp

from fdjax.tasks.base import DegradeFn


def with_regularizer(loss, features):
  """``loss`` plus ``features['regularizer']`` when the model returns one: a term the
  model asks every training loss to add, already weighted (MEASNet's ``lambda *``
  balance loss, ``fdjax.models.measnet``); ``loss`` itself otherwise."""
  if isinstance(features, dict) and "regularizer" in features:
    return loss + features["regularizer"]
  return loss


def supervised_loss(model, task, degrade: DegradeFn | None = None):
  """Mean per-example task loss on (optionally degraded) augmented inputs.

  Serves the clean stage, Scratch, Vanilla fine-tuning and Fusing (cross-entropy for
  classification); ``degrade(key, images_uint8) -> uint8`` decides what the student sees.
  A model's ``features['regularizer']`` is added (``with_regularizer``).
  """

  def loss_fn(params, batch_stats, batch, key):
    student_input, target, _ = task.views(key, batch, degrade)
    (outputs, features), updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, task.model_input(student_input),
        train=True, mutable=["batch_stats"])
    loss = with_regularizer(jnp.mean(task.per_example_loss(outputs, target)), features)
    return loss, (updates["batch_stats"], task.train_metrics(outputs, target))

  return loss_fn
