"""Mixture-of-experts CIFAR ResNet student (``MoEResNet``).

The CIFAR ResNet of ``fdjax.models.resnet`` in which each stage named in
``moe_stages`` (default ``('stage3',)``) is a mixture of ``num_experts`` copies of
that stage (its BasicBlocks, each copy with its own weights). Copy i is initialised
from per-degradation expert i, every other part from the fused model
(``fdjax.moe.init.moe_variables``).

Parameter tree (depth 6n+2, stage s routed)::

    stem_conv, stem_norm, stage{t}_block{b} (unrouted stages), classifier   # as CifarResNet
    stage{s}_moe/router/{prompt_conv, basic_prompts, expert_prompts}
    stage{s}_moe/experts/block{b}/...   # every leaf [E, ...]: experts stacked on axis 0
    stage{s}_moe/shared/block{b}/...    # channel_sharing only: the fused stage
    stage{s}_moe/channel_gate/{kernel, bias}   # channel_sharing only

``batch_stats`` mirror this (experts' statistics stacked on axis 0 too), so the
leading expert axis can be sharded over a mesh axis (``fdjax.moe.init.expert_sharding``).

Apply returns ``(logits [B, classes], features)`` with CifarResNet's features
('stem', 'stage1'..'stage3', 'pooled') plus

* ``router``: the first routed stage's gates after top-K and renormalisation,
  ``[B, E]`` (per image) or ``[B, H, W, E]`` (per pixel, at that stage's input
  resolution); ``router_stage{s}`` for every routed stage;
* ``router_logits``: the first routed stage's gate logits before noise, softmax and
  top-K (``[B, E]`` or ``[B, H, W, E]``), for router supervision;
  ``router_logits_stage{s}`` for every routed stage;
* ``aux_loss``: sum over routed stages of the unweighted balance loss (scalar);
* ``channel_gate_stage{s}``: ``[B, C_out]`` sharing gates (``channel_sharing`` only).

so ``fusiondistill_loss(moe_model, ..., teacher_model=dense, aux_loss_weight=lambda)``
trains it unchanged (MEASNet eq. 12: ``loss + lambda * l_balance``, lambda = 1e-4).

The variables do not depend on ``k``, ``routing``, ``dispatch`` or ``capacity_factor``:
e.g. train with K=2 and measure single-expert inference with
``model.clone(k=1, dispatch='sparse', capacity_factor=1.0)`` on the same variables.

Dispatch (documented choices):

* ``dense``: every expert runs on the whole batch (``nn.vmap`` with the input
  broadcast) and the outputs are summed with the (mostly zero) gates. In training
  each expert's BatchNorm statistics are therefore those of the whole batch.
* ``sparse`` (per-image routing, inference), two implementations, both equal to
  ``dense`` up to rounding when nothing is dropped:

  - ``capacity_factor`` a number: Switch-Transformer one-hot dispatch into per-expert
    buffers of ``capacity = ceil(B K / E * capacity_factor)`` images (at most B); the
    experts run only on their buffers and the combine tensor scatters the weighted
    outputs back. ``capacity_factor = E / K`` never drops an image; with less, an
    image that finds an expert's buffer full gets no contribution from that expert.
    Every expert runs on ``capacity`` slots, so the saving needs a batch (at B = 1
    all E experts run on a buffer of 1).
  - ``capacity_factor=None`` (default): each image gathers its K selected expert
    copies and runs only those (``B * K`` stage evaluations at any batch size, B = 1
    included; memory for ``B * K`` parameter copies of the stage).

  With ``train=True`` and with per-pixel routing, ``sparse`` computes exactly as
  ``dense`` (BatchNorm batch statistics over a sub-batch would differ from dense's;
  per-pixel routing has no per-image token to dispatch).
* per-pixel routing at a stage that downsamples: the experts run at full input
  resolution, their outputs are combined at the output resolution with the gates
  average-pooled to it (``fdjax.moe.gating.pool_gates``).

Noisy top-K gating (``noisy_gating=True``, Shazeer et al. 2017): in training
(``train=True``) each routed stage adds ``N(0, 1) * softplus(x W_noise)`` to its gate
logits before the softmax and top-K (noise from the ``'gating'`` PRNG stream:
``apply(..., rngs={'gating': key})``) and its balance loss uses the differentiable
load of ``fdjax.moe.gating.noisy_top_k_load``; at evaluation nothing is added (the
outputs do not depend on any key).

Channel-level sharing (MUIRF's CPSM, ``channel_sharing=True``), per image b and output
channel c of the routed stage::

    g[b, c] = sigmoid(W GAP(router_input)[b] + w0)[c]            # shallow-feature gate
    out[b, :, :, c] = g[b, c] * shared(x)[b, :, :, c] + (1 - g[b, c]) * mix(x)[b, :, :, c]

where ``shared`` is the fused stage kept as a shared branch and ``mix`` the gated
expert mixture. MUIRF selects shared channels of every convolution's weights; we
gate the stage's output channels (one gate per channel per image). ``W`` starts at
zero, so ``g = 0.5`` at initialisation.

Mixed precision (``dtype=jnp.bfloat16``), as ``CifarResNet`` (parameters, BatchNorm
statistics, head and logits float32; convolutions and stage activations bfloat16) and,
as in Switch Transformers' selective precision: the router (its input cast to float32),
its softmax, top-K, noise, the balance loss (``aux_loss``) and the channel-sharing gate
are float32; only the combination of the expert outputs casts the gates to the
activations' dtype (``dispatch``/``combine`` tensors likewise).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fdjax.models.resnet import (STAGE_WIDTHS, Head, adaptive_avg_pool, batch_norm, classifier,
                                 pool_head, residual_blocks, stem)
from fdjax.moe.gating import dispatch_tensors, expert_capacity, pool_gates
from fdjax.moe.experts import (ExpertLoop, ResidualStage, resolve_expert_loop,
                               run_selected_experts, run_stacked)
from fdjax.moe.routing import channel_share, route

STAGES = ("stage1", "stage2", "stage3")
ROUTER_SOURCES = ("input", "stem", "image")
Routing = Literal["image", "pixel"]
Dispatch = Literal["dense", "sparse"]


class RoutingOptions(nn.Module, kw_only=True):
  """The routing attributes that ``MoEResNet`` passes on to each ``MoEStage`` (see
  ``moe_resnet``'s arguments). Its subclasses take keyword arguments only."""

  num_experts: int = 4
  k: int = 2
  routing: Routing = "image"
  dispatch: Dispatch = "dense"
  num_prompts: int = 8
  channel_sharing: bool = False
  capacity_factor: float | None = None
  renormalize: bool = True
  expert_loop: ExpertLoop = "auto"
  noisy_gating: bool = False
  prompt_init_scale: float = 1.0
  dtype: Any = jnp.float32

  def routing_options(self) -> dict[str, Any]:
    """This module's ``RoutingOptions`` attributes, by name."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(RoutingOptions)
            if f.name not in ("parent", "name")}


class MoEStage(RoutingOptions, kw_only=True):
  """A routed residual stage. See the module docstring for the dispatch modes."""

  width: int
  num_blocks: int
  strides: int
  norm: Any

  @nn.compact
  def __call__(self, x, router_x, train: bool = False):
    """x: ``[B, H, W, Cin]``; router_x: shallow features ``[B, H', W', C']`` (same H, W
    for per-pixel routing). Returns ``(out [B, h, w, width], gates, aux_loss,
    channel_gate, logits)``: gates ``[B, E]`` or ``[B, H, W, E]`` after top-K, aux_loss
    the unweighted balance loss, channel_gate ``[B, width]`` or None, logits the
    router's logits before noise and top-K."""
    per_pixel = self.routing == "pixel"
    gates, mask, probs, logits, aux = route(
        self, router_x, num_experts=self.num_experts, k=self.k, per_pixel=per_pixel,
        num_prompts=self.num_prompts, noisy=self.noisy_gating,
        prompt_init_scale=self.prompt_init_scale, renormalize=self.renormalize, train=train)
    stage_args = dict(width=self.width, num_blocks=self.num_blocks, strides=self.strides,
                      norm=self.norm, dtype=self.dtype)
    sparse = self.dispatch == "sparse" and not per_pixel and not train
    if sparse and self.capacity_factor is None and not self.is_initializing():
      stacked = {c: self.variables[c]["experts"] for c in ("params", "batch_stats")}
      out = run_selected_experts(stage_args, stacked, x, probs, gates, self.k)
    elif sparse and self.capacity_factor is not None:
      capacity = expert_capacity(x.shape[0], self.num_experts, self.k, self.capacity_factor)
      dispatch, combine = dispatch_tensors(gates, mask, capacity)      # [B, E, cap]
      buffers = jnp.einsum("tes,t...->es...", dispatch.astype(x.dtype), x)  # [E, cap, H, W, C]
      y = run_stacked(stage_args, self.num_experts, buffers, False,
                       self.expert_loop)                               # [E, cap, h, w, width]
      out = jnp.einsum("tes,es...->t...", combine.astype(y.dtype), y)
    else:
      y = run_stacked(stage_args, self.num_experts, x, True,
                       self.expert_loop)                               # [E, B, h, w, width]
      if per_pixel:
        g = pool_gates(gates, y.shape[2:4], self.renormalize)          # [B, h, w, E]
        out = jnp.einsum("ebhwc,bhwe->bhwc", y, g.astype(y.dtype))
      else:
        out = jnp.einsum("eb...,be->b...", y, gates.astype(y.dtype))   # MEASNet eq. (3)
    channel_gate = None
    if self.channel_sharing:   # MUIRF CPSM: per-channel choice of shared vs expert features
      shared = ResidualStage(**stage_args, name="shared")(x)
      out, channel_gate = channel_share(self, shared, out, router_x, self.width)
    return out, gates, aux, channel_gate, logits


class MoEResNet(RoutingOptions, kw_only=True):
  """CIFAR ResNet-(6n+2) with routed stages. Attributes as ``moe_resnet``'s arguments.

  ``router_source``: ``'input'`` routes each stage on its own input; ``'stem'`` on
  the stem output (the shallowest features); ``'image'`` on the normalised input
  image itself (both average-pooled to the stage's input resolution for per-pixel
  routing).
  """

  depth: int = 56
  num_classes: int = 10
  head: Head = "gap"
  moe_stages: Sequence[str] = ("stage3",)
  router_source: Literal["input", "stem", "image"] = "input"
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x: float ``[B, H, W, 3]`` normalised. Returns ``(logits [B, C] float32, features)``."""
    _validate(self.depth, self.head, self.num_experts, self.k, self.moe_stages, self.routing,
              self.dispatch, self.router_source)
    blocks_per_stage = (self.depth - 2) // 6
    norm = batch_norm(train, self.bn_momentum, self.bn_epsilon, self.dtype)
    image = x
    x = stem(x.astype(self.dtype), norm, self.dtype)
    features = {"stem": x}
    aux_losses = []
    for stage, width in enumerate(STAGE_WIDTHS):
      name, strides = f"stage{stage + 1}", 2 if stage > 0 else 1
      if name in self.moe_stages:
        router_x = {"input": x, "stem": features["stem"], "image": image}[self.router_source]
        if self.routing == "pixel" and router_x.shape[1:3] != x.shape[1:3]:
          router_x = adaptive_avg_pool(router_x, x.shape[1:3])
        x, gates, aux, channel_gate, logits = MoEStage(
            width=width, num_blocks=blocks_per_stage, strides=strides, norm=norm,
            **self.routing_options(), name=f"{name}_moe")(x, router_x, train)
        features.setdefault("router", gates)
        features[f"router_{name}"] = gates
        features.setdefault("router_logits", logits)
        features[f"router_logits_{name}"] = logits
        if channel_gate is not None:
          features[f"channel_gate_{name}"] = channel_gate
        aux_losses.append(aux)
      else:
        x = residual_blocks(x, width, blocks_per_stage, strides, norm, self.dtype,
                            prefix=f"{name}_")
      features[name] = x
    pooled = pool_head(x.astype(jnp.float32), self.head)
    features["pooled"] = pooled
    features["aux_loss"] = sum(aux_losses)
    return classifier(pooled, self.num_classes), features


def _validate(depth, head, num_experts, k, moe_stages, routing, dispatch, router_source):
  if (depth - 2) % 6 or depth < 8:
    raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
  if head not in ("gap", "reference"):
    raise ValueError(f"head must be 'gap' or 'reference', got {head!r}")
  if not 1 <= k <= num_experts:
    raise ValueError(f"need 1 <= k <= num_experts ({num_experts}), got k={k}")
  if isinstance(moe_stages, str) or not moe_stages or not set(moe_stages) <= set(STAGES):
    raise ValueError(f"moe_stages must be a non-empty subset of {STAGES}, got {moe_stages!r}")
  if routing not in ("image", "pixel"):
    raise ValueError(f"routing must be 'image' or 'pixel', got {routing!r}")
  if dispatch not in ("dense", "sparse"):
    raise ValueError(f"dispatch must be 'dense' or 'sparse', got {dispatch!r}")
  if router_source not in ROUTER_SOURCES:
    raise ValueError(f"router_source must be one of {ROUTER_SOURCES}, got {router_source!r}")


def moe_resnet(depth: int, num_classes: int, head: Head = "gap", num_experts: int = 4,
               k: int = 2, moe_stages: Sequence[str] = ("stage3",), routing: Routing = "image",
               dispatch: Dispatch = "dense", num_prompts: int = 8, channel_sharing: bool = False,
               **kwargs) -> MoEResNet:
  """Builds a ``MoEResNet`` (validated). ``kwargs``: ``capacity_factor``, ``renormalize``, ``expert_loop``,
  ``router_source``, ``noisy_gating``, ``prompt_init_scale`` (multiplies the expert
  prompts' init std 0.02), ``dtype``, ``bn_momentum``, ``bn_epsilon``."""
  moe_stages = tuple(moe_stages) if not isinstance(moe_stages, str) else moe_stages
  _validate(depth, head, num_experts, k, moe_stages, routing, dispatch,
            kwargs.get("router_source", "input"))
  resolve_expert_loop(kwargs.get("expert_loop", "auto"))
  return MoEResNet(depth=depth, num_classes=num_classes, head=head, num_experts=num_experts, k=k,
                   moe_stages=moe_stages, routing=routing, dispatch=dispatch,
                   num_prompts=num_prompts, channel_sharing=channel_sharing, **kwargs)
