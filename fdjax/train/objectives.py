"""The supervised loss for the generic train step (see ``step.py`` for the signature).

The task (``fdjax.tasks``) makes the training views of a batch on device (flip,
degradation, crop, cutout for classification) and gives the per-example loss; this
module only averages it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fdjax.tasks.base import DegradeFn

TASK_BALANCES = ("none", "loss")


def with_regularizer(loss, features):
  """``loss`` plus ``features['regularizer']`` when the model returns one: a term the
  model asks every training loss to add, already weighted (MEASNet's ``lambda *``
  balance loss, ``fdjax.models.measnet``); ``loss`` itself otherwise."""
  if isinstance(features, dict) and "regularizer" in features:
    return loss + features["regularizer"]
  return loss


def train_apply(model, task, params, batch_stats, images, **apply_options):
  """``model`` in training mode on ``task.model_input(images)`` (the student's view of a
  batch, ``task.views``): ``(outputs, features, batch_stats)``, the BatchNorm statistics
  as the batch updated them. ``apply_options`` go to ``model.apply`` (``rngs``). Every
  training loss starts with it."""
  (outputs, features), updates = model.apply(
      {"params": params, "batch_stats": batch_stats}, task.model_input(images), train=True,
      mutable=["batch_stats"], **apply_options)
  return outputs, features, updates["batch_stats"]


def check_balance(balance: str) -> None:
  """Raises ``ValueError`` unless ``balance`` is one of ``TASK_BALANCES``."""
  if balance not in TASK_BALANCES:
    raise ValueError(f"task_balance must be one of {TASK_BALANCES}, got {balance!r}")


def share_weights(share_losses, balance: str = "none"):
  """Weights ``[S]`` (no gradient) for the mean loss of each of S tasks (shares).

  ``'none'``: all 1 (the plain mean over the batch). ``'loss'``: ``mean_s(L_s) / L_s``,
  so every task contributes the same loss value and its gradient is scaled by the
  inverse of its own loss: a task with a large per-pixel error (haze in joint
  restoration) no longer drowns the others. The weighted mean keeps the plain mean's
  value (``mean_s(w_s L_s) = mean_s(L_s)``)."""
  check_balance(balance)
  if balance == "none":
    return jnp.ones_like(share_losses)
  share_losses = jax.lax.stop_gradient(share_losses)
  return jnp.mean(share_losses) / jnp.maximum(share_losses, 1e-12)


def task_balance(config, block: str | None = None) -> str:
  """The task balance of the stage whose config block is ``block``: the block's own
  ``task_balance`` when set (not ''), else the config's ``task_balance`` ('none' when
  the schema has neither)."""
  own = config[block].get("task_balance", "") if block else ""
  return own or config.get("task_balance", "none")


def balance_uses(config) -> tuple[str, ...]:
  """``('task_balance',)`` when the config balances the tasks of combined stages: the
  field then enters those stages' fingerprints (the default leaves them as they were),
  except where a stage's own block sets one (``fingerprint_fields.OVERRIDDEN_BY``)."""
  return ("task_balance",) if task_balance(config) != "none" else ()


def supervised_loss(model, task, degrade: DegradeFn | None = None, *, shares: int = 1,
                    balance: str = "none"):
  """Mean per-example task loss on (optionally degraded) augmented inputs.

  Serves the clean stage, Scratch, Vanilla fine-tuning and Fusing (cross-entropy for
  classification); ``degrade(key, images_uint8) -> uint8`` decides what the student sees.
  A model's ``features['regularizer']`` is added (``with_regularizer``). ``shares``: the
  batch is that many equal consecutive shares, one task (degradation) each, whose mean
  losses are weighted by ``share_weights(..., balance)`` (plain mean by default).
  """
  check_balance(balance)  # a bad mode fails when the loss is built, not in the step

  def loss_fn(params, batch_stats, batch, key):
    student_input, target, _ = task.views(key, batch, degrade)
    outputs, features, batch_stats = train_apply(model, task, params, batch_stats, student_input)
    per_example = task.per_example_loss(outputs, target)
    if balance == "none":  # the plain mean, summed as it always was
      loss = jnp.mean(per_example)
    else:
      per_share = jnp.mean(per_example.reshape(shares, -1), axis=1)
      loss = jnp.mean(share_weights(per_share, balance) * per_share)
    loss = with_regularizer(loss, features)
    return loss, (batch_stats, task.train_metrics(outputs, target))

  return loss_fn
