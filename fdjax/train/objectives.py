"""Loss functions for the generic train step (see ``step.py`` for the signature).

The input pipeline inside the loss follows the FusionDistill code, per image:
random horizontal flip of the clean image, then (optionally) degradation, then
4-pixel zero padding and a random crop shared by the clean and degraded views,
then cutout on the view the student trains on (the degraded one when there is
one). Everything runs on device from uint8 ``[B, H, W, 3]`` batches.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from fdjax.data import augment
from fdjax.models import normalize

# degrade(key, images_uint8 [B,H,W,3]) -> (degraded uint8 [B,H,W,3], info dict)
DegradeFn = Callable[[jax.Array, jax.Array], jax.Array]


def prepare_views(key, images, cfg: ml_collections.ConfigDict, degrade: DegradeFn | None = None):
  """Returns ``(clean_view, student_view)``, both uint8 ``[B, H, W, 3]``.

  ``cfg`` is the ``augment`` config (flip, crop, pad, cutout, cutout_size). Without
  ``degrade`` the student view is the augmented clean image (with cutout).
  """
  k_flip, k_degrade, k_crop, k_cutout = jax.random.split(key, 4)
  if cfg.flip:
    images = augment.random_flip(k_flip, images)
  degraded = degrade(k_degrade, images) if degrade is not None else images
  if cfg.crop:
    images, degraded = augment.random_crop(k_crop, images, degraded, pad=cfg.pad)
  if cfg.cutout:
    degraded = augment.cutout(k_cutout, degraded, size=cfg.cutout_size)
  return images, degraded


def cross_entropy(logits, labels):
  """Mean softmax cross-entropy; logits float ``[B, C]``, labels int ``[B]``."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def classification_loss(model, *, normalization: str, augment_cfg: ml_collections.ConfigDict,
                        degrade: DegradeFn | None = None):
  """Plain cross-entropy on (optionally degraded) augmented images.

  Serves the clean stage, Scratch, Vanilla fine-tuning and Fusing; ``degrade``
  decides what the student sees.
  """

  def loss_fn(params, batch_stats, batch, key):
    _, student_view = prepare_views(key, batch["image"], augment_cfg, degrade)
    (logits, _), updates = model.apply(
        {"params": params, "batch_stats": batch_stats}, normalize(student_view, normalization),
        train=True, mutable=["batch_stats"])
    loss = cross_entropy(logits, batch["label"])
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    return loss, (updates["batch_stats"], {"train_accuracy": accuracy})

  return loss_fn
