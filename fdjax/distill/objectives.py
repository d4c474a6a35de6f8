"""Loss functions with frozen teachers, for the generic train step.

* ``expert_loss`` (stage 2, the ILIAC recipe): the expert sees the degraded view,
  the frozen clean model sees the clean view of the same image (same flip and
  crop); loss = ``ce_weight * CE + cos_weight * (1 - cos)`` on one feature map.
* ``fusiondistill_loss`` (stage 4): the batch holds one equal share per
  degradation; share i is degraded by degradation i for the student and shown
  clean to frozen expert i; loss = ``alpha * CE + sum_i gamma_i * (1 - cos_i)``.
  When the experts share one architecture (always, here) their variables are
  stacked on a leading axis and their forward passes run as one ``vmap``.

``frozen`` (the step's read-only argument) holds the teachers' variables.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections

from fdjax.distill.losses import cosine_distance
from fdjax.models import normalize
from fdjax.train.objectives import DegradeFn, cross_entropy, prepare_views


def stack_variables(variables_list: Sequence[dict]) -> dict:
  """N variable pytrees of one architecture -> one pytree with a leading axis N."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *variables_list)


def expert_loss(model, *, normalization: str, augment_cfg: ml_collections.ConfigDict,
                degrade: DegradeFn, feature: str = "stage3", ce_weight: float = 1.0,
                cos_weight: float = 1.0):
  """ILIAC expert training against the frozen clean model (``frozen`` = its variables)."""

  def loss_fn(params, batch_stats, batch, key, frozen):
    clean_view, degraded_view = prepare_views(key, batch["image"], augment_cfg, degrade)
    (logits, features), updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, normalize(degraded_view, normalization),
        train=True, mutable=["batch_stats"])
    _, teacher_features = model.apply(frozen, normalize(clean_view, normalization), train=False)
    ce = cross_entropy(logits, batch["label"])
    cos = cosine_distance(features[feature], jax.lax.stop_gradient(teacher_features[feature]))
    loss = ce_weight * ce + cos_weight * cos
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss, (updates["batch_stats"], {"ce": ce, "cos": cos, "train_accuracy": accuracy})

  return loss_fn


def fusiondistill_loss(model, *, normalization: str, augment_cfg: ml_collections.ConfigDict,
                       degrade: DegradeFn, num_experts: int, feature: str = "stage3",
                       alpha: float = 0.1, gammas: Sequence[float] | None = None):
  """Stage 4. ``frozen`` = expert variables stacked on a leading axis of size ``num_experts``.

  ``degrade`` must degrade share i of the batch with degradation i (see
  ``fdjax.distill.degrade.combined``). The batch size must be a multiple of
  ``num_experts``; the shares are its consecutive equal slices.
  """
  gammas = jnp.asarray(gammas if gammas is not None else [1.0] * num_experts, jnp.float32)
  if gammas.shape != (num_experts,):
    raise ValueError(f"need one gamma per expert ({num_experts}), got {gammas.shape[0]}")

  def loss_fn(params, batch_stats, batch, key, frozen):
    clean_view, degraded_view = prepare_views(key, batch["image"], augment_cfg, degrade)
    (logits, features), updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, normalize(degraded_view, normalization),
        train=True, mutable=["batch_stats"])
    batch_size = clean_view.shape[0]
    share = batch_size // num_experts
    clean_shares = normalize(clean_view, normalization).reshape(num_experts, share,
                                                                *clean_view.shape[1:])

    def teacher(variables, images):
      return model.apply(variables, images, train=False)[1][feature]

    teacher_features = jax.lax.stop_gradient(jax.vmap(teacher)(frozen, clean_shares))
    student_features = features[feature].reshape(num_experts, share, *features[feature].shape[1:])
    cos_per_expert = jax.vmap(cosine_distance)(student_features, teacher_features)
    ce = cross_entropy(logits, batch["label"])
    loss = alpha * ce + jnp.sum(gammas * cos_per_expert)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    metrics = {"ce": ce, "cos": jnp.mean(cos_per_expert), "train_accuracy": accuracy}
    return loss, (updates["batch_stats"], metrics)

  return loss_fn
