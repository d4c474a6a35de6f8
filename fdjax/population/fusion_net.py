"""EA-Adam's fusion network: the P frozen members mixed per image, then baked into one model.

Every layer of the members' architecture becomes a dynamic layer whose weights are
``sum_p alpha_p theta_p`` over the P members' weights (convolution kernels, biases,
BatchNorm scales, offsets and running statistics alike), with one mixing vector
``alpha [P]`` (softmax) per image predicted by a small network (``MixingPredictor``:
two strided convolutions, global average pooling, a two-layer MLP, softmax) from the
model input. Only the predictor trains. Baking: ``alpha`` averaged over a calibration
set gives ONE static model ``sum_p mean(alpha)_p theta_p`` with no extra inference
cost; it is exactly the dynamic network run with the averaged mixing weights for every
image (tested).

Variables: the predictor's ``{'params': ...}``; the members ``{'params',
'batch_stats'}`` stacked on axis 0 (``fdjax.population.state.stack_members``).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


class MixingPredictor(nn.Module):
  """Model input ``[B, H, W, C]`` float -> mixing weights ``[B, num_members]`` (rows sum to 1)."""

  num_members: int
  width: int = 16

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    h = nn.relu(nn.Conv(self.width, (3, 3), strides=(2, 2))(x))
    h = nn.relu(nn.Conv(self.width, (3, 3), strides=(2, 2))(h))
    h = nn.relu(nn.Dense(self.width)(jnp.mean(h, axis=(1, 2))))
    return nn.softmax(nn.Dense(self.num_members)(h), axis=-1)


def mix_members(stacked: dict, alpha: jax.Array) -> dict:
  """``sum_p alpha[p] * member_p`` leaf by leaf; ``alpha`` float ``[P]``."""
  return jax.tree.map(lambda leaf: jnp.tensordot(alpha.astype(leaf.dtype), leaf, axes=1), stacked)


def dynamic_apply(member_model, stacked: dict, alpha: jax.Array, x: jax.Array):
  """``(outputs, features)`` of the dynamic network: image b through the members mixed
  by ``alpha[b]`` (``[B, P]``), in inference mode. ``x``: model input ``[B, H, W, C]``."""

  def one(a, image):
    outputs, features = member_model.apply(mix_members(stacked, a), image[None], train=False)
    return jax.tree.map(lambda v: v[0], (outputs, features))

  return jax.vmap(one)(alpha, x)


def bake(stacked: dict, mean_alpha) -> dict:
  """The static model of the averaged mixing weights ``mean_alpha [P]``."""
  return mix_members(stacked, jnp.asarray(mean_alpha))


def fusion_loss(member_model, predictor: MixingPredictor, task, degrade):
  """Loss for the step: the task loss of the dynamic network on ``degrade``-d views;
  ``params`` = the predictor's, ``frozen`` = the stacked members. Metric ``alpha``
  ``[P]``: the batch's mean mixing weights."""

  def loss_fn(params, batch_stats, batch, key, frozen):
    student_input, target, _ = task.views(key, batch, degrade)
    x = task.model_input(student_input)
    alpha = predictor.apply({"params": params}, x)
    outputs, _ = dynamic_apply(member_model, frozen, alpha, x)
    loss = jnp.mean(task.per_example_loss(outputs, target))
    return loss, (batch_stats, {"alpha": jnp.mean(alpha, axis=0),
                                **task.train_metrics(outputs, target)})

  return loss_fn


@functools.lru_cache(maxsize=16)
def dynamic_predictor(task, member_model, predictor: MixingPredictor):
  """``predict(variables, images_uint8) -> outputs`` of the dynamic network for
  ``variables = {'predictor': params, 'members': stacked}`` (memoised: one compilation)."""

  def predict(variables, images):
    x = task.model_input(images)
    alpha = predictor.apply({"params": variables["predictor"]}, x)
    return dynamic_apply(member_model, variables["members"], alpha, x)[0]

  return predict


@functools.lru_cache(maxsize=16)
def _alpha_fn(task, predictor: MixingPredictor):
  return jax.jit(lambda params, images: predictor.apply({"params": params},
                                                        task.model_input(images)))


def average_mixing(task, predictor: MixingPredictor, params, batches) -> jax.Array:
  """float32 ``[P]``: the mixing weights averaged over every image of ``batches``
  (an iterable of uint8 image arrays ``[B, H, W, 3]``, e.g. degraded calibration images)."""
  alpha_of = _alpha_fn(task, predictor)
  total, count = 0.0, 0
  for images in batches:
    alpha = alpha_of(params, images)
    total, count = total + jnp.sum(alpha, axis=0), count + alpha.shape[0]
  if not count:
    raise ValueError("average_mixing needs at least one calibration image")
  return total / count
