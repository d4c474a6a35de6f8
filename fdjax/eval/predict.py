"""Jitted inference: uint8 images -> logits, with the model's own normalisation."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from fdjax import data as data_lib
from fdjax.models import normalize
from fdjax.train.mesh import check_batch_size, data_sharding, replicated


def make_predict(model, normalization: str, mesh=None) -> Callable:
  """``predict(variables, images_uint8 [B,H,W,3]) -> logits float32 [B, C]``, jitted.

  With ``mesh`` the batch is split over its ``data`` axis and the variables replicated.
  """

  def predict(variables, images):
    logits, _ = model.apply(variables, normalize(images, normalization), train=False)
    return logits

  if mesh is None:
    return jax.jit(predict)
  return jax.jit(predict, in_shardings=(replicated(mesh), data_sharding(mesh)),
                 out_shardings=replicated(mesh))


def accuracy(predict: Callable, variables, split, *, batch_size: int, mesh,
             transform: Callable | None = None) -> float:
  """Top-1 accuracy (0..1) of ``predict`` on an ``ImageSet``.

  ``transform(batch_index, images_uint8) -> images_uint8`` is applied to every batch
  on device first (e.g. a degradation at a fixed level with a fixed key).
  """
  check_batch_size(batch_size, mesh)
  correct = total = 0
  for index, batch in enumerate(data_lib.eval_batches(split, batch_size,
                                                      sharding=data_sharding(mesh))):
    images = batch["image"] if transform is None else transform(index, batch["image"])
    predictions = np.asarray(jax.device_get(predict(variables, images))).argmax(-1)
    mask = np.asarray(jax.device_get(batch["mask"]))
    labels = np.asarray(jax.device_get(batch["label"]))
    correct += int(((predictions == labels) & mask).sum())
    total += int(mask.sum())
  return correct / max(total, 1)
