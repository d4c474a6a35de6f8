"""One routing decision of a mixture-of-experts layer, and the per-pixel / per-image
combination of expert outputs; shared by every MoE module of fdjax (the ResNet
student's ``MoEStage``, MEASNet's routed MLPs, the U-Net student's routed blocks).

``route`` creates the layer's ``PromptRouter`` (named ``'router'``) in the calling
compact module and applies MEASNet's gate: (noisy) logits -> softmax (eq. 2) -> top-K
(``fdjax.moe.gating.top_k_gates``) -> the CV^2 balance loss (eqs. 4-6). Shapes: ``E``
experts; per image ``[B, E]``, per pixel ``[B, H, W, E]`` at the router input's
resolution.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fdjax.moe.gating import (balance_loss, noisy_logits, noisy_top_k_load, top_k_gates)
from fdjax.moe.router import PromptRouter

EXPERT_PROMPT_INIT_STD = 0.02   # PromptRouter's default, times prompt_init_scale


class Routing(NamedTuple):
  """gates: after top-K (and renormalisation) ``[..., E]``; mask: 1 on the kept experts;
  probs: softmax before top-K; logits: the router's, before noise; aux: the unweighted
  balance loss (scalar float32)."""

  gates: jax.Array
  mask: jax.Array
  probs: jax.Array
  logits: jax.Array
  aux: jax.Array


def route(module: nn.Module, router_x, *, num_experts: int, k: int, per_pixel: bool,
          num_prompts: int = 8, noisy: bool = False, prompt_init_scale: float = 1.0,
          renormalize: bool = True, train: bool = False) -> Routing:
  """Routes ``router_x [B, H, W, C]`` (call inside ``module``'s compact method).

  ``noisy``: Shazeer's noisy top-K; in training (``train``) the noise is drawn from
  ``module.make_rng('gating')`` and the balance loss's load term is the differentiable
  ``noisy_top_k_load`` (when ``k < num_experts``). Parameters: ``router/*`` of
  ``PromptRouter``.
  """
  router = PromptRouter(num_experts, num_prompts, per_pixel=per_pixel,
                        expert_prompt_init_std=EXPERT_PROMPT_INIT_STD * prompt_init_scale,
                        noisy=noisy, name="router")
  if noisy:
    logits, noise_std = router(router_x)
  else:
    logits, noise_std = router(router_x), None
  add_noise = noisy and train
  if add_noise and not module.has_rng("gating"):
    raise ValueError("noisy gating in training draws from the 'gating' PRNG stream: apply "
                     "with rngs={'gating': key} (fusiondistill_loss(rng_streams=('gating',)))")
  h = noisy_logits(logits, noise_std, module.make_rng("gating")) if add_noise else logits
  probs = nn.softmax(h, axis=-1)                       # MEASNet eq. (2)
  gates, mask = top_k_gates(probs, k, renormalize)
  load_probs = (noisy_top_k_load(logits, h, noise_std, k)
                if add_noise and k < num_experts else None)
  aux = balance_loss(probs, mask, load_probs=load_probs)   # MEASNet eqs. (4)-(6)
  return Routing(gates, mask, probs, logits, aux)


def combine(expert_outputs, gates):
  """``sum_e gates[..., e] * expert_outputs[e]``: expert outputs ``[E, B, H, W, C]`` with
  per-pixel gates ``[B, H, W, E]`` or per-image gates ``[B, E]`` -> ``[B, H, W, C]``."""
  g = gates.astype(expert_outputs.dtype)
  if gates.ndim == 2:
    return jnp.einsum("ebhwc,be->bhwc", expert_outputs, g)
  return jnp.einsum("ebhwc,bhwe->bhwc", expert_outputs, g)


def channel_share(module: nn.Module, shared, mixed, router_x, channels: int):
  """MUIRF's channel-level sharing (CPSM) as fdjax reads it, per image b and channel c:
  ``g * shared + (1 - g) * mixed`` with ``g [B, C] = sigmoid(Dense(GAP(router_x)))``
  (parameters ``channel_gate/{kernel, bias}``, kernel zero at init: ``g = 0.5``).
  Returns ``(out, g)``. A soft gate on the block's output channels, not MUIRF's
  shallow-feature MoE choosing which convolution weight channels to share."""
  pooled = jnp.mean(router_x.astype(jnp.float32), axis=(1, 2))
  g = nn.sigmoid(nn.Dense(channels, kernel_init=nn.initializers.zeros,
                          name="channel_gate")(pooled))   # [B, C]
  gb = g[:, None, None, :].astype(mixed.dtype)
  return gb * shared + (1 - gb) * mixed, g


def routing_features(extras: dict) -> dict:
  """Features of routed blocks ``{name: {'routing': Routing, 'channel_gate': g or None}}``
  (in the order they ran): ``router_<name>``, ``router_logits_<name>``,
  ``channel_gate_<name>``, and ``router`` / ``router_logits`` of the routed block with
  the most pixels (the later one on ties), ``aux_loss`` (sum of balance losses; 0.0
  when nothing is routed)."""
  features: dict = {"aux_loss": jnp.float32(0.0)}
  finest = None
  for name, info in extras.items():
    r = info["routing"]
    features[f"router_{name}"] = r.gates
    features[f"router_logits_{name}"] = r.logits
    if info.get("channel_gate") is not None:
      features[f"channel_gate_{name}"] = info["channel_gate"]
    features["aux_loss"] = features["aux_loss"] + r.aux
    pixels = r.gates.shape[1] * r.gates.shape[2] if r.gates.ndim == 4 else 0
    if finest is None or pixels >= finest[0]:
      finest = (pixels, r)
  if finest is not None:
    features["router"], features["router_logits"] = finest[1].gates, finest[1].logits
  return features
