"""Re-estimating BatchNorm running statistics of a fused model on data.

An averaged model's activations are not the average of the experts'
activations, so neither the first expert's running statistics (FusionDistill's
code) nor their average describe the soup. The remedy used for SWA and model
soups is to recompute them with a pass over data, as
``torch.optim.swa_utils.update_bn`` does with ``momentum=None``: the running
statistic becomes the plain average, over batches, of each batch's statistic.

Model-agnostic trick: in train mode a Flax ``BatchNorm`` with momentum ``m``
writes ``new = m * old + (1 - m) * batch_stat`` for every running statistic,
and its output does not depend on ``old``. So each batch's statistics, for
every BN layer at once, are ``(new - m * old) / (1 - m)`` -- no need to know
where the BN layers are. We feed ``old = 0`` (allowed, since train mode ignores
it), which makes the recovery ``new / (1 - m)`` and avoids the cancellation
``new - m * old`` would suffer in float32 when ``|old| >> |batch_stat|``.

Variance convention: flax's batch variance is the BIASED one (divide by the
number of reduced elements ``N = B*H*W``), whereas PyTorch keeps the unbiased
``N/(N-1)`` one in its running var; for conv layers the difference is negligible.
As in ``update_bn``, every batch weighs the same (a short last batch counts as
much as a full one) and the variance is the average of within-batch variances.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from fdjax.train.mesh import replicated


def reestimate_batch_stats(model, variables: Mapping[str, Any], image_batches: Iterable[Any], *,
                           model_input: Callable, momentum: float | None = None) -> dict:
  """Variables with ``batch_stats`` re-estimated on ``image_batches``; params unchanged.

  Args:
    model: a Flax module whose ``apply(variables, x, train=True,
      mutable=['batch_stats'])`` updates running statistics with momentum
      ``momentum`` (default ``model.bn_momentum``; every BN layer must use it).
    variables: ``{'params': ..., 'batch_stats': ...}`` (e.g. a soup). The incoming
      ``batch_stats`` values are ignored, only their structure is kept.
    image_batches: iterable of uint8 ``[B, H, W, 3]`` arrays, already degraded
      by the caller; consumed once. Each distinct shape compiles once.
    model_input: uint8 images -> the model's input (the task's ``model_input``, e.g.
      ``ClassificationTask('cifar10').model_input``); hashable (it is a jit static).

  Returns:
    A new variables dict: same ``params`` (and any other collection), and
    ``batch_stats`` = mean over batches of each batch's statistics (float32
    leaves cast to the incoming dtypes).
  """
  old = variables.get("batch_stats") if isinstance(variables, Mapping) else None
  if not old or not jax.tree_util.tree_leaves(old):
    return dict(variables)  # No BatchNorm: nothing to re-estimate.
  if momentum is None:
    momentum = getattr(model, "bn_momentum", None)
    if momentum is None:
      raise ValueError("model has no bn_momentum attribute; pass momentum=")
  momentum = float(momentum)
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f"BatchNorm momentum must be in [0, 1), got {momentum}")

  params = {k: v for k, v in variables.items() if k != "batch_stats"}
  zeros = jax.tree_util.tree_map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), old)
  mean = zeros
  count = 0
  for images in image_batches:
    if jnp.ndim(images) != 4:
      raise ValueError(f"image batches must be [B, H, W, C], got shape {jnp.shape(images)}")
    count += 1
    if count == 1:
      zeros = mean = _beside(zeros, images)
    mean = _accumulate(model, model_input, momentum, params, zeros, mean,
                       jnp.float32(count), jnp.asarray(images))
  if count == 0:
    raise ValueError("image_batches is empty: need at least one batch to re-estimate BatchNorm")
  mean = jax.tree_util.tree_map(lambda m, o: m.astype(jnp.asarray(o).dtype), mean, old)
  return {**params, "batch_stats": mean}


def _beside(tree, images):
  """``tree`` replicated over the mesh of ``images`` (a batch placed on one), where
  ``_accumulate``'s outputs go: the first call's ``mean`` placed as the later calls'
  are, one compiled program instead of two (the first call's uncommitted zeros
  compiled a second one). ``tree`` unchanged for host images."""
  sharding = getattr(images, "sharding", None)
  if not isinstance(sharding, jax.sharding.NamedSharding):
    return tree
  return jax.device_put(tree, replicated(sharding.mesh))


@functools.partial(jax.jit, static_argnames=("model", "model_input", "momentum"))
def _accumulate(model, model_input, momentum, params, zeros, mean, count, images):
  """Running mean update ``mean += (batch_stat - mean) / count`` for one batch."""
  stats = _batch_statistics(model, model_input, momentum, params, zeros, images)
  return jax.tree_util.tree_map(lambda m, s: m + (s - m) / count, mean, stats)


def _batch_statistics(model, model_input, momentum, params, zeros, images):
  """Per-layer batch mean and biased variance of ``images`` as a batch_stats pytree."""
  x = model_input(images)
  _, updates = model.apply({**params, "batch_stats": zeros}, x, train=True,
                           mutable=["batch_stats"])
  # new = m * old + (1 - m) * stat with old = 0  =>  stat = new / (1 - m).
  return jax.tree_util.tree_map(
      lambda new, old: (new.astype(jnp.float32) - momentum * old) / (1.0 - momentum),
      updates["batch_stats"], zeros)
