"""EA-Adam's fusion network: the P frozen members mixed per image, then baked into one model.

Every layer of the members' architecture becomes a dynamic layer whose weights are
``sum_p alpha_p theta_p`` over the P members' weights (convolution kernels, biases,
BatchNorm scales, offsets and running statistics alike), with one mixing vector
``alpha [P]`` (softmax) per image predicted by a small network (``MixingPredictor``:
two strided convolutions, global average pooling, a two-layer MLP, softmax) from the
model input. One vector for every layer: the official code (``Dynamic_conv2d`` in
EA-Adam's ``srresnet_dynamic``) predicts one per layer from that layer's input; a single
vector is what lets the network bake into one static model. Only the predictor trains.
Baking: ``alpha`` averaged over a calibration set gives ONE static model
``sum_p mean(alpha)_p theta_p`` with no extra inference cost; it is exactly the dynamic
network run with the averaged mixing weights for every
image (tested).

Variables: the predictor's ``{'params': ...}``; the members ``{'params',
'batch_stats'}`` stacked on axis 0 (``fdjax.population.state.stack_members``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

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
  """``(outputs, features)`` of the dynamic network, in inference mode: image b through
  the members mixed by ``alpha[b]`` (``[B, P]``). ``x``: model input ``[B, H, W, C]``.

  Layer by layer (Flax method interception), never a per-image network: a convolution
  or dense layer is linear in its weights, so its output for the mixed weights is
  ``sum_p alpha[b, p] * layer_p(x_b)``: P ordinary batched calls, mixed per image. A
  BatchNorm layer (running statistics) is applied with its per-image mixed scale,
  offset, mean and variance. Any other layer with parameters is refused.
  """
  members = jax.tree.leaves(stacked)[0].shape[0]
  inner = [False]   # True while one member's layer runs (not intercepted again)

  def mix(outputs):   # [P, B, ...] -> [B, ...]
    return jnp.einsum("bp,pb...->b...", alpha.astype(outputs.dtype), outputs)

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if inner[0] or context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    if isinstance(module, (nn.Conv, nn.Dense)):
      params, plain = module.variables["params"], module.clone(parent=None)
      inner[0] = True
      try:
        outputs = [plain.apply({"params": jax.tree.map(lambda v, i=i: v[i], params)},
                               *args, **kwargs) for i in range(members)]
      finally:
        inner[0] = False
      return mix(jnp.stack(outputs))
    if isinstance(module, nn.BatchNorm):
      return _mixed_batch_norm(module, args[0], alpha)
    if any(not isinstance(v, Mapping) for v in module.variables.get("params", {}).values()):
      raise NotImplementedError(f"the fusion network mixes Conv, Dense and BatchNorm layers "
                                f"only, not {type(module).__name__}")
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    return member_model.apply(stacked, x, train=False)


def _mixed_batch_norm(module: nn.BatchNorm, x: jax.Array, alpha: jax.Array) -> jax.Array:
  """Inference BatchNorm (running statistics, features on the last axis) with every
  statistic and affine parameter mixed per image: ``[P, C]`` -> ``[B, 1.., C]``."""
  if module.axis not in (-1, x.ndim - 1):
    raise NotImplementedError("the fusion network mixes BatchNorm over the last axis only")
  shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)

  def mixed(v):
    return (alpha.astype(jnp.float32) @ v.astype(jnp.float32)).reshape(shape)

  stats, params = module.variables["batch_stats"], module.variables.get("params", {})
  y = (x.astype(jnp.float32) - mixed(stats["mean"])) * jax.lax.rsqrt(
      mixed(stats["var"]) + module.epsilon)
  if module.use_scale:
    y = y * mixed(params["scale"])
  if module.use_bias:
    y = y + mixed(params["bias"])
  return y.astype(module.dtype or x.dtype)


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


@dataclasses.dataclass(frozen=True)
class DynamicNetwork:
  """The dynamic network as a module-like object, so that ``task.predict`` applies it as
  any model (input normalisation, padding to ``stride`` and cropping back, the output
  range of the task): ``apply({'predictor': params, 'members': stacked}, x)``."""

  member_model: Any
  predictor: MixingPredictor

  @property
  def stride(self) -> int:
    return getattr(self.member_model, "stride", 1)

  def apply(self, variables, x, train: bool = False):
    del train   # inference only: the members are frozen
    alpha = self.predictor.apply({"params": variables["predictor"]}, x)
    return dynamic_apply(self.member_model, variables["members"], alpha, x)


@functools.lru_cache(maxsize=16)
def dynamic_predictor(task, member_model, predictor: MixingPredictor):
  """``predict(variables, images_uint8) -> outputs`` of the dynamic network for
  ``variables = {'predictor': params, 'members': stacked}``: ``task.predict`` of a
  ``DynamicNetwork`` (restoration: clipped 0..255 images; memoised: one compilation)."""
  network = DynamicNetwork(member_model, predictor)

  def predict(variables, images):
    return task.predict(network, variables, images)

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
