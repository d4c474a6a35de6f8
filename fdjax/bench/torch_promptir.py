"""PromptIR's prompt block in plain ``torch.nn`` (NCHW), for benchmarks: the PyTorch peer
of ``fdjax.models.PromptIR`` is ``fdjax.bench.torch_unet.UNet(..., before_up=
prompt_blocks(...))``.

As ``fdjax.models.promptir.PromptBlock`` (its docstring has the equations), written with
the operations of PromptIR's code (``net/model.py``'s ``PromptGenBlock``): a linear layer
on the globally pooled features and a softmax weigh ``num_prompts`` learned components
``[N, d, S, S]``, ``F.interpolate(mode='bilinear')`` resizes their sum to the features'
size, a bias-free 3x3 convolution follows (the prompt generation module); the prompt
concatenated to the features passes a ``ConvBlock`` and a bias-free 1x1 convolution back
to ``c`` channels (the prompt interaction module; a Restormer transformer block in
PromptIR, a ``ConvBlock`` in fdjax's variant).

Importing this module requires ``torch``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fdjax.bench.torch_unet import ConvBlock, load_conv


class PromptBlock(nn.Module):
  """``[B, c, h, w] -> [B, c, h, w]``: features prompted (module docstring)."""

  def __init__(self, channels: int, prompt_dim: int, prompt_size: int, num_prompts: int = 5):
    super().__init__()
    self.weights = nn.Linear(channels, num_prompts)
    self.components = nn.Parameter(torch.rand(num_prompts, prompt_dim, prompt_size, prompt_size))
    self.prompt_conv = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1, bias=False)
    self.interaction = ConvBlock(channels + prompt_dim)
    self.reduce = nn.Conv2d(channels + prompt_dim, channels, 1, bias=False)

  def forward(self, x):
    weights = F.softmax(self.weights(x.mean(dim=(2, 3))), dim=1)            # [B, N]
    prompt = torch.einsum("bn,ndij->bdij", weights, self.components)         # [B, d, S, S]
    prompt = self.prompt_conv(F.interpolate(prompt, x.shape[2:], mode="bilinear"))
    return self.reduce(self.interaction(torch.cat([x, prompt], dim=1)))

  @torch.no_grad()
  def load_flax(self, p) -> None:
    """Copies a flax ``fdjax.models.promptir.PromptBlock``'s parameters ``p`` in place."""
    self.weights.weight.copy_(torch.from_numpy(np.array(p["weights"]["kernel"]).T.copy()))
    self.weights.bias.copy_(torch.from_numpy(np.array(p["weights"]["bias"])))
    self.components.copy_(torch.from_numpy(
        np.array(p["components"]).transpose(0, 3, 1, 2).copy()))             # [N, S, S, d]
    load_conv(self.prompt_conv, p["prompt_conv"])
    self.interaction.load_flax(p["interaction"])
    load_conv(self.reduce, p["reduce"])


def prompt_blocks(prompt_dim: int = 8, prompt_size: int = 16, num_prompts: int = 5):
  """``before_up(channels, level)`` for ``torch_unet.UNet``: PromptIR's sizes per level as
  ``fdjax.models.PromptIR``'s (``d = prompt_dim * 2^(l-1)``, ``S = max(1, prompt_size //
  2^(l-1))``), named ``prompt<l>`` as its parameters."""
  def make(channels: int, level: int):
    scale = 2 ** (level - 1)
    return f"prompt{level}", PromptBlock(channels, prompt_dim * scale,
                                         max(1, prompt_size // scale), num_prompts)
  return make
