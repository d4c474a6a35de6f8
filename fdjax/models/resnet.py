"""CIFAR ResNets (He et al. 2016, Sec. 4.2) as used by FusionDistill.

Depth ``6n + 2`` with ``n`` basic blocks in each of three stages of 16, 32 and 64
channels on 32x32 inputs. Stage changes use stride 2 and a 1x1 convolution +
BatchNorm shortcut (option B), as the FusionDistill reference code does.

Inputs are float32 ``[B, H, W, 3]`` already normalised (see ``preprocess.py``).
``apply`` returns ``(logits, features)``; ``features`` holds the post-ReLU output
of the stem and of every stage plus the pooled vector fed to the classifier, so
that distillation losses can pick any of them by name.

Mixed precision (``dtype=jnp.bfloat16``): parameters are created and kept in float32
(``param_dtype``); convolutions and the activations between them (``features['stem']``
... ``['stage3']``) are in ``dtype``; BatchNorm computes its batch statistics and its
normalisation arithmetic in float32 (flax promotes to at least float32 and keeps
``batch_stats`` in float32) and returns ``dtype``; the head (pooling, classifier,
``features['pooled']`` and the logits) is float32. With ``dtype=float32`` (the default)
everything is float32.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import flax.linen as nn
import jax.numpy as jnp

from fdjax.models.materialize import materialize

DEPTHS = (8, 20, 32, 56, 110)
STAGE_WIDTHS = (16, 32, 64)
Head = Literal["gap", "reference"]

# PyTorch's kaiming_normal_(mode='fan_out') used by the reference code.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
PARAM_DTYPE = jnp.float32   # parameters (and so gradients and optimiser state), any dtype


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with BatchNorm; projection shortcut when shape changes."""

  features: int
  strides: int
  norm: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=_conv_init, dtype=self.dtype,
                             param_dtype=PARAM_DTYPE)
    y = conv(self.features, (3, 3), (self.strides, self.strides), padding=((1, 1), (1, 1)))(x)
    y = nn.relu(self.norm()(y))
    y = conv(self.features, (3, 3), padding=((1, 1), (1, 1)))(y)
    last_norm = self.norm(scale_init=nn.initializers.ones)
    y = last_norm(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = conv(self.features, (1, 1), (self.strides, self.strides), name="shortcut_conv")(x)
      x = self.norm(name="shortcut_norm")(x)
    out = nn.relu(x + y)
    # In training, the block's output in memory, so that XLA:CPU does not recompute the
    # residual stream inside the backward pass's transposes (fdjax.models.materialize);
    # inference has no such transposes, and its compiled program (and FLOP count) stays
    # free of the cut. The cut's predicate comes from a (replicated) parameter, so a
    # batch-sharded step needs no collective for it.
    if not norm_is_training(self.norm):
      return out
    return materialize(out, anchor=last_norm.variables["params"]["scale"])


class CifarResNet(nn.Module):
  """CIFAR ResNet-(6n+2).

  Attributes:
    depth: total depth, one of ``DEPTHS`` (any ``6n + 2`` works).
    num_classes: classifier outputs.
    head: ``'gap'`` = global average pool -> dense (He et al.); ``'reference'``
      = adaptive average pool to 2x2 -> flatten (256 features) -> dense, the
      head of the FusionDistill code.
    dtype: computation dtype of the convolutions and activations (float32, or
      bfloat16); parameters, BatchNorm statistics, the head and the logits stay
      float32 (module docstring).
  """

  depth: int = 56
  num_classes: int = 10
  head: Head = "gap"
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9  # PyTorch momentum 0.1 on the new value.
  bn_epsilon: float = 1e-5

  @property
  def feature_names(self) -> tuple[str, ...]:
    """The keys of the features the network returns."""
    return ("stem", *(f"stage{i + 1}" for i in range(len(STAGE_WIDTHS))), "pooled")

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x: float ``[B, H, W, 3]`` normalised. Returns ``(logits [B, C] float32, features)``."""
    if (self.depth - 2) % 6 or self.depth < 8:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {self.depth}")
    blocks_per_stage = (self.depth - 2) // 6
    norm = batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype)
    x = stem(x.astype(self.dtype), norm, self.dtype)
    features = {"stem": x}
    for stage, width in enumerate(STAGE_WIDTHS):
      x = residual_blocks(x, width, blocks_per_stage, 2 if stage > 0 else 1, norm, self.dtype,
                          prefix=f"stage{stage + 1}_")
      features[f"stage{stage + 1}"] = x
    pooled = pool_head(x.astype(jnp.float32), self.head)
    features["pooled"] = pooled
    return classifier(pooled, self.num_classes), features


def batch_norm(train: bool, momentum: float, epsilon: float, dtype: Any):
  """The BatchNorm constructor of every norm layer: batch statistics when ``train``, else
  the running averages (``momentum`` on the old value, as flax counts it). Statistics,
  running averages, scale and bias and the normalisation arithmetic are float32 whatever
  ``dtype`` (flax's ``force_float32_reductions``); the output is cast to ``dtype``."""
  return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=momentum,
                           epsilon=epsilon, dtype=dtype, param_dtype=PARAM_DTYPE,
                           force_float32_reductions=True)


def norm_is_training(norm) -> bool:
  """Whether a norm constructor of ``batch_norm`` normalises with batch statistics (a
  training pass, which a backward pass follows)."""
  return not norm.keywords.get("use_running_average", True)


def classifier(pooled, num_classes: int):
  """The float32 linear classifier, submodule ``classifier`` of the calling module:
  ``[B, F]`` (cast to float32) -> logits float32 ``[B, num_classes]``."""
  return nn.Dense(num_classes, dtype=jnp.float32, param_dtype=PARAM_DTYPE,
                  name="classifier")(pooled.astype(jnp.float32))


def stem(x, norm, dtype: Any):
  """3x3 convolution to ``STAGE_WIDTHS[0]`` channels, BatchNorm, ReLU, as submodules
  ``stem_conv`` and ``stem_norm`` of the calling module. ``[B, H, W, C] -> [B, H, W, 16]``."""
  x = nn.Conv(STAGE_WIDTHS[0], (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
              kernel_init=_conv_init, dtype=dtype, param_dtype=PARAM_DTYPE, name="stem_conv")(x)
  return nn.relu(norm(name="stem_norm")(x))


def residual_blocks(x, width: int, num_blocks: int, strides: int, norm, dtype: Any,
                    prefix: str = ""):
  """``num_blocks`` BasicBlocks, submodules ``{prefix}block{b}`` of the calling module, the
  first with ``strides``. ``[B, H, W, C] -> [B, ceil(H / strides), ceil(W / strides), width]``."""
  for b in range(num_blocks):
    x = BasicBlock(width, strides if b == 0 else 1, norm, dtype, name=f"{prefix}block{b}")(x)
  return x


def pool_head(x, head: Head):
  """The classifier's input: ``'gap'`` averages ``[B, H, W, C]`` to ``[B, C]``;
  ``'reference'`` adaptive-average-pools to 2x2 and flattens to ``[B, 4C]``."""
  if head == "gap":
    return jnp.mean(x, axis=(1, 2))
  if head == "reference":
    return adaptive_avg_pool(x, 2).reshape(x.shape[0], -1)
  raise ValueError(f"head must be 'gap' or 'reference', got {head!r}")


def adaptive_avg_pool(x, size: int | tuple[int, int]):
  """PyTorch ``AdaptiveAvgPool2d(size)`` for spatial sizes divisible by ``size`` (an int
  for a square output, or ``(h, w)``). ``[B, H, W, C] -> [B, h, w, C]``."""
  oh, ow = (size, size) if isinstance(size, int) else size
  b, h, w, c = x.shape
  if h % oh or w % ow:
    raise ValueError(f"adaptive average pooling to {oh}x{ow} needs a spatial size divisible "
                     f"by it, got {h}x{w}")
  return x.reshape(b, oh, h // oh, ow, w // ow, c).mean(axis=(2, 4))


def cifar_resnet(depth: int, num_classes: int, head: Head = "gap", dtype: Any = jnp.float32) -> CifarResNet:
  """Builds a CIFAR ResNet-``depth`` (8, 20, 32, 56, 110, or any 6n+2)."""
  if (depth - 2) % 6 or depth < 8:
    raise ValueError(f"CIFAR ResNet depth must be 6n+2 (e.g. {DEPTHS}), got {depth}")
  if head not in ("gap", "reference"):
    raise ValueError(f"head must be 'gap' or 'reference', got {head!r}")
  return CifarResNet(depth=depth, num_classes=num_classes, head=head, dtype=dtype)
