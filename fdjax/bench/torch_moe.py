"""The routed blocks of fdjax's MoE restorers in plain ``torch.nn`` (NCHW), for
benchmarks: MEASNet's decoder block (the peer of ``fdjax.models.MEASNet`` is
``fdjax.bench.torch_unet.UNet(..., block_at=meas_blocks(...))``) and FusionDistill-MoE's
routed U-Net block (the peer of ``fdjax.moe.unet_student.RoutedUNet`` is
``UNet(..., block_at=routed_blocks(...))``).

Both route per pixel with MEASNet's prompt router (``fdjax.moe.router`` and
``fdjax.moe.routing.route`` have the equations)::

    q = softmax(GAP(conv3x3(r)))                        # TSPG weights [B, C]
    logits = [q @ P_t (broadcast), r] @ p_e             # [B, H, W, E]
    gates = top_K(softmax(logits)), renormalised        # the K kept sum to 1

on the router input ``r``, and keep the CV^2 balance loss of the softmax weights and
of the selection counts (``fdjax.moe.gating.balance_loss``) in ``aux`` after each
forward pass (``balance_loss(routers(net))`` sums them, for the training loss's
weighted term).
MEASNet's block (``fdjax.models.measnet.MEASBlock``)::

    y = ConvBlock(x);  out = y + sum_e gates_e(y) * MLP_e(y)    # MLP_e: c -> h -> c, ReLU

The routed U-Net block (``fdjax.moe.unet_student.RoutedBlock``, router on the block's
input): ``out = sum_e gates_e(x) * block_e(x)`` over E copies of the U-Net's block.
Every expert runs on every pixel (dense dispatch, as fdjax's). No noisy gating, channel
sharing or raw (not renormalised) gates: the benchmark's models use none of them.

Importing this module requires ``torch``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fdjax.bench.torch_unet import ConvBlock, load_conv

EPS = 1e-10   # fdjax.moe.gating.EPS


def cv_squared(x):
  """``var(x) / (mean(x)^2 + eps)`` with the population variance (``fdjax.moe.gating``)."""
  return x.var(unbiased=False) / (x.mean() ** 2 + EPS)


def _copy(param: nn.Parameter, value) -> None:
  param.copy_(torch.from_numpy(np.array(value)))


class PromptRouter(nn.Module):
  """``r [B, c, H, W] -> gates [B, H, W, E]`` (module docstring); ``aux`` holds the last
  call's balance loss (a scalar tensor)."""

  def __init__(self, channels: int, num_experts: int, k: int, num_prompts: int = 8):
    super().__init__()
    self.k = k
    self.prompt_conv = nn.Conv2d(channels, num_prompts, 3, padding=1)
    self.basic_prompts = nn.Parameter(torch.randn(num_prompts, channels))
    self.expert_prompts = nn.Parameter(0.02 * torch.randn(2 * channels, num_experts))
    self.aux = torch.zeros(())

  def forward(self, r):
    q = F.softmax(self.prompt_conv(r).mean(dim=(2, 3)), dim=1)                # [B, C]
    prompt = (q @ self.basic_prompts)[:, :, None, None].expand(-1, -1, *r.shape[2:])
    logits = torch.einsum("bdhw,de->bhwe", torch.cat([prompt, r], dim=1), self.expert_prompts)
    probs = F.softmax(logits, dim=-1)                                         # [B, H, W, E]
    mask = torch.zeros_like(probs).scatter_(-1, probs.detach().topk(self.k, dim=-1).indices,
                                            1.0)
    gates = probs * mask
    e = probs.shape[-1]
    self.aux = cv_squared(probs.reshape(-1, e).sum(0)) + cv_squared(mask.reshape(-1, e).sum(0))
    return gates / gates.sum(dim=-1, keepdim=True)

  @torch.no_grad()
  def load_flax(self, p) -> None:
    """Copies a flax ``fdjax.moe.router.PromptRouter``'s parameters ``p`` in place."""
    load_conv(self.prompt_conv, p["prompt_conv"])
    _copy(self.basic_prompts, p["basic_prompts"])
    _copy(self.expert_prompts, p["expert_prompts"])


class MEASBlock(nn.Module):
  """MEASNet's routed decoder block, ``[B, c, H, W] -> [B, c, H, W]`` (module docstring)."""

  def __init__(self, channels: int, num_experts: int = 4, k: int = 2, mlp_expand: int = 2,
               num_prompts: int = 8):
    super().__init__()
    hidden = mlp_expand * channels
    self.conv = ConvBlock(channels)
    self.router = PromptRouter(channels, num_experts, k, num_prompts)
    self.kernel1 = nn.Parameter(0.1 * torch.randn(num_experts, channels, hidden))
    self.bias1 = nn.Parameter(torch.zeros(num_experts, hidden))
    self.kernel2 = nn.Parameter(0.1 * torch.randn(num_experts, hidden, channels))
    self.bias2 = nn.Parameter(torch.zeros(num_experts, channels))

  def forward(self, x):
    y = self.conv(x)
    gates = self.router(y)
    h = torch.relu(torch.einsum("bchw,ecd->ebdhw", y, self.kernel1)
                   + self.bias1[:, None, :, None, None])
    experts = (torch.einsum("ebdhw,edc->ebchw", h, self.kernel2)
               + self.bias2[:, None, :, None, None])                          # [E, B, c, H, W]
    return y + torch.einsum("ebchw,bhwe->bchw", experts, gates)

  @torch.no_grad()
  def load_flax(self, p) -> None:
    """Copies a flax ``MEASBlock``'s parameters ``p`` in place."""
    self.conv.load_flax(p["conv"])
    self.router.load_flax(p["ffn_moe"]["router"])
    for name in ("kernel1", "bias1", "kernel2", "bias2"):
      _copy(getattr(self, name), p["ffn_moe"]["experts"][name])


class RoutedBlock(nn.Module):
  """FusionDistill-MoE's routed U-Net block, ``[B, c, H, W] -> [B, c, H, W]`` (module
  docstring): ``num_experts`` copies of ``block(channels)``. Its flax parameters are
  named ``<block>_moe`` (``param_suffix``)."""

  param_suffix = "_moe"

  def __init__(self, channels: int, num_experts: int, k: int, num_prompts: int = 8,
               block: Callable[[int], nn.Module] = ConvBlock):
    super().__init__()
    self.router = PromptRouter(channels, num_experts, k, num_prompts)
    self.experts = nn.ModuleList(block(channels) for _ in range(num_experts))

  def forward(self, x):
    gates = self.router(x)
    return torch.einsum("ebchw,bhwe->bchw", torch.stack([b(x) for b in self.experts]), gates)

  @torch.no_grad()
  def load_flax(self, p) -> None:
    """Copies a flax ``fdjax.moe.unet_student.RoutedBlock``'s parameters ``p`` (the
    experts' leaves stacked on axis 0) in place."""
    self.router.load_flax(p["router"])
    for i, expert in enumerate(self.experts):
      expert.load_flax(_index(p["experts"], i))


def _index(tree, i: int):
  return ({key: _index(value, i) for key, value in tree.items()} if isinstance(tree, dict)
          else np.array(tree)[i])


def meas_blocks(num_experts: int = 4, k: int = 2, mlp_expand: int = 2, num_prompts: int = 8):
  """``block_at(level, channels)`` for ``torch_unet.UNet``: MEASNet's routed block in the
  decoder, the plain block elsewhere, with ``fdjax.models.MEASNet``'s options."""
  def make(level: str, channels: int) -> nn.Module:
    if level.startswith("decoder"):
      return MEASBlock(channels, num_experts, k, mlp_expand, num_prompts)
    return ConvBlock(channels)
  return make


def routed_blocks(routed, num_experts: int, k: int, num_prompts: int = 8,
                  block: Callable[[int], nn.Module] = ConvBlock):
  """``block_at(level, channels)`` for ``torch_unet.UNet``: ``RoutedBlock``s over
  ``block`` at the ``routed`` levels (``'encoder<l>'``, ``'middle'``, ``'decoder<l>'``),
  ``block`` elsewhere, as ``fdjax.moe.unet_student.RoutedUNet``."""
  def make(level: str, channels: int) -> nn.Module:
    if level in routed:
      return RoutedBlock(channels, num_experts, k, num_prompts, block)
    return block(channels)
  return make


def routers(net: nn.Module) -> list[PromptRouter]:
  """``net``'s routers, in module order (encoder levels, middle, decoder levels)."""
  return [m for m in net.modules() if isinstance(m, PromptRouter)]


def balance_loss(net_routers: list[PromptRouter]):
  """The sum of the last forward pass's balance losses of ``routers(net)``
  (``features['aux_loss']`` of the flax model)."""
  return sum(r.aux for r in net_routers)
