"""MEASNet's routed decoder block in plain ``torch.nn`` (NCHW), for benchmarks: the
PyTorch peer of ``fdjax.models.MEASNet`` is ``fdjax.bench.torch_unet.UNet(...,
decoder_block=meas_blocks(...))``.

As ``fdjax.models.measnet.MEASBlock`` (its docstring and ``fdjax.moe.router``'s have the
equations), per pixel::

    y = ConvBlock(x)
    q = softmax(GAP(conv3x3(y)))                        # TSPG weights [B, C]
    logits = [q @ P_t (broadcast), y] @ p_e             # [B, H, W, E]
    gates = top_K(softmax(logits)), renormalised        # the K kept sum to 1
    out = y + sum_e gates_e * MLP_e(y)                  # MLP_e: c -> h -> c, ReLU

with every expert evaluated on every pixel (dense dispatch, as fdjax's), and the CV^2
balance loss of the softmax weights and of the selection counts (``fdjax.moe.gating.
balance_loss``) kept in ``aux`` after each forward pass, for the training loss's
``balance_weight * sum(aux)``. No noisy gating, channel sharing or raw (not
renormalised) gates: the benchmark's MEASNet uses none of them.

Importing this module requires ``torch``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fdjax.bench.torch_unet import ConvBlock, load_conv

EPS = 1e-10   # fdjax.moe.gating.EPS


def cv_squared(x):
  """``var(x) / (mean(x)^2 + eps)`` with the population variance (``fdjax.moe.gating``)."""
  return x.var(unbiased=False) / (x.mean() ** 2 + EPS)


class MEASBlock(nn.Module):
  """``[B, c, H, W] -> [B, c, H, W]`` (module docstring); ``aux`` holds the last forward
  pass's balance loss (a scalar tensor)."""

  def __init__(self, channels: int, num_experts: int = 4, k: int = 2, mlp_expand: int = 2,
               num_prompts: int = 8):
    super().__init__()
    hidden = mlp_expand * channels
    self.k = k
    self.conv = ConvBlock(channels)
    self.prompt_conv = nn.Conv2d(channels, num_prompts, 3, padding=1)
    self.basic_prompts = nn.Parameter(torch.randn(num_prompts, channels))
    self.expert_prompts = nn.Parameter(0.02 * torch.randn(2 * channels, num_experts))
    self.kernel1 = nn.Parameter(0.1 * torch.randn(num_experts, channels, hidden))
    self.bias1 = nn.Parameter(torch.zeros(num_experts, hidden))
    self.kernel2 = nn.Parameter(0.1 * torch.randn(num_experts, hidden, channels))
    self.bias2 = nn.Parameter(torch.zeros(num_experts, channels))
    self.aux = torch.zeros(())

  def forward(self, x):
    y = self.conv(x)
    q = F.softmax(self.prompt_conv(y).mean(dim=(2, 3)), dim=1)                # [B, C]
    prompt = (q @ self.basic_prompts)[:, :, None, None].expand(-1, -1, *y.shape[2:])
    fused = torch.cat([prompt, y], dim=1)                                     # [B, 2c, H, W]
    logits = torch.einsum("bdhw,de->bhwe", fused, self.expert_prompts)
    probs = F.softmax(logits, dim=-1)                                         # [B, H, W, E]
    index = probs.detach().topk(self.k, dim=-1).indices
    mask = torch.zeros_like(probs).scatter_(-1, index, 1.0)
    gates = probs * mask
    gates = gates / gates.sum(dim=-1, keepdim=True)
    e = probs.shape[-1]
    self.aux = (cv_squared(probs.reshape(-1, e).sum(0))
                + cv_squared(mask.reshape(-1, e).sum(0)))
    h = torch.relu(torch.einsum("bchw,ecd->ebdhw", y, self.kernel1)
                   + self.bias1[:, None, :, None, None])
    experts = (torch.einsum("ebdhw,edc->ebchw", h, self.kernel2)
               + self.bias2[:, None, :, None, None])                          # [E, B, c, H, W]
    return y + torch.einsum("ebchw,bhwe->bchw", experts, gates)

  @torch.no_grad()
  def load_flax(self, p) -> None:
    """Copies a flax ``fdjax.models.measnet.MEASBlock``'s parameters ``p`` in place."""
    self.conv.load_flax(p["conv"])
    moe = p["ffn_moe"]
    load_conv(self.prompt_conv, moe["router"]["prompt_conv"])
    for name, value in (("basic_prompts", moe["router"]["basic_prompts"]),
                        ("expert_prompts", moe["router"]["expert_prompts"]),
                        *((n, moe["experts"][n]) for n in ("kernel1", "bias1", "kernel2",
                                                           "bias2"))):
      getattr(self, name).copy_(torch.from_numpy(np.array(value)))


def meas_blocks(num_experts: int = 4, k: int = 2, mlp_expand: int = 2, num_prompts: int = 8):
  """``decoder_block(channels)`` for ``torch_unet.UNet``: MEASNet's routed block with
  ``fdjax.models.MEASNet``'s options."""
  return lambda channels: MEASBlock(channels, num_experts, k, mlp_expand, num_prompts)


def balance_loss(net: nn.Module):
  """The sum of the last forward pass's balance losses over ``net``'s ``MEASBlock``s
  (``features['aux_loss']`` of the flax model)."""
  return sum(m.aux for m in net.modules() if isinstance(m, MEASBlock))
