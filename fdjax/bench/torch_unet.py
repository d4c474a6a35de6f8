"""The U-Nets of ``fdjax.models.unet`` in plain ``torch.nn`` (NCHW), for benchmarks.

Same architecture, layer for layer (``fdjax.models.unet``'s docstring): 3x3 intro conv
(3 -> width); per encoder level ``blocks`` blocks then a 2x2 stride-2 conv doubling the
channels; ``middle_blocks`` blocks; per decoder level a 1x1 conv without bias (c -> 2c),
``PixelShuffle(2)`` (-> c / 2), the skip added, ``blocks`` blocks; 3x3 ending conv
(width -> 3) added to the input. The block is the plain U-Net's ``ConvBlock``
(``x + conv3x3(relu(conv3x3(x)))``) or another with the same interface, such as
``fdjax.bench.torch_nafnet.NAFBlock``; an optional module before each decoder level's
up-sampling (``before_up``, as ``fdjax.models.unet.unet``'s: PromptIR's prompt blocks,
``fdjax.bench.torch_promptir``), and other blocks at chosen levels (``block_at``: the
routed blocks of MEASNet and of FusionDistill-MoE's student, ``fdjax.bench.torch_moe``).
The parameter count equals the flax model's, and ``load_flax(params)`` copies a flax
``UNet``'s (or ``NAFNet``'s, ``PromptIR``'s, ``MEASNet``'s, ``RoutedUNet``'s) parameters
in (so both compute the same function: ``tests/test_torch_unet.py``).

Importing this module requires ``torch``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def load_conv(module: nn.Conv2d, p) -> None:
  """Copies a flax ``nn.Conv``'s ``{'kernel' [kh, kw, in / groups, out], 'bias'}`` into
  ``module`` (weight ``[out, in / groups, kh, kw]``)."""
  # np.array copies: a JAX array's numpy view is read-only, which torch warns about.
  module.weight.copy_(torch.from_numpy(np.array(p["kernel"]).transpose(3, 2, 0, 1).copy()))
  if module.bias is not None:
    module.bias.copy_(torch.from_numpy(np.array(p["bias"])))


class ConvBlock(nn.Module):
  """``x + conv3x3(relu(conv3x3(x)))``, channels unchanged (``fdjax.models.unet.ConvBlock``)."""

  def __init__(self, channels: int):
    super().__init__()
    self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
    self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

  def forward(self, x):
    return x + self.conv2(torch.relu(self.conv1(x)))

  def load_flax(self, p) -> None:
    """Copies the flax block's parameters ``p`` in place."""
    load_conv(self.conv1, p["conv1"])
    load_conv(self.conv2, p["conv2"])


class UNet(nn.Module):
  """``UNet(width, depth, blocks, middle_blocks, block, before_up)``; input ``[B, 3, H,
  W]``, H and W divisible by ``2**depth``; returns the restored image (no features).
  ``block(channels)`` makes each block (a module with ``load_flax(params)``);
  ``ConvBlock`` by default. ``before_up(channels, level)`` (optional) returns ``(name,
  module)``: the module (channels unchanged, with ``load_flax(params)``) that the input
  of the up-sampling into decoder level ``level`` (1 = top) passes through, and the
  name of its parameters in the flax model. ``block_at(level, channels)`` (optional) makes
  the blocks instead of ``block``, by level name (``'encoder<l>'``, ``'middle'``,
  ``'decoder<l>'``): the routed blocks of ``fdjax.bench.torch_moe``; a block whose class
  has a ``param_suffix`` loads the flax parameters ``<name><suffix>``."""

  def __init__(self, width: int = 16, depth: int = 2, blocks: int = 1, middle_blocks: int = 1,
               block: Callable[[int], nn.Module] = ConvBlock,
               before_up: Callable[[int, int], tuple[str, nn.Module]] | None = None,
               block_at: Callable[[str, int], nn.Module] | None = None):
    super().__init__()
    block_at = block_at or (lambda level, channels: block(channels))
    self.depth = depth
    self.before_up, self.before_up_names = nn.ModuleDict(), []
    self.intro = nn.Conv2d(3, width, 3, padding=1)
    self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
    channels = width
    for level in range(depth):
      self.encoders.append(nn.Sequential(*(block_at(f"encoder{level + 1}", channels)
                                           for _ in range(blocks))))
      self.downs.append(nn.Conv2d(channels, channels * 2, 2, stride=2))
      channels *= 2
    self.middle = nn.Sequential(*(block_at("middle", channels) for _ in range(middle_blocks)))
    for level in reversed(range(depth)):   # bottom-up; stored top level first below
      if before_up is not None:
        name, module = before_up(channels, level + 1)
        self.before_up[name] = module
        self.before_up_names.insert(0, name)
      self.ups.append(nn.Conv2d(channels, channels * 2, 1, bias=False))
      channels //= 2
      self.decoders.append(nn.Sequential(*(block_at(f"decoder{level + 1}", channels)
                                           for _ in range(blocks))))
    # built bottom-up above; stored top level first
    self.ups = nn.ModuleList(reversed(self.ups))
    self.decoders = nn.ModuleList(reversed(self.decoders))
    self.shuffle = nn.PixelShuffle(2)
    self.ending = nn.Conv2d(width, 3, 3, padding=1)

  def forward(self, x):
    h, skips = self.intro(x), []
    for level in range(self.depth):
      h = self.encoders[level](h)
      skips.append(h)
      h = self.downs[level](h)
    h = self.middle(h)
    for level in reversed(range(self.depth)):
      if self.before_up_names:
        h = self.before_up[self.before_up_names[level]](h)
      h = self.shuffle(self.ups[level](h)) + skips[level]
      h = self.decoders[level](h)
    return x + self.ending(h)

  @torch.no_grad()
  def load_flax(self, params) -> "UNet":
    """Copies a flax ``fdjax.models.UNet``'s (or ``NAFNet``'s, ``PromptIR``'s, with their
    blocks) ``params`` (same shape options) in place."""
    def blocks(seq, prefix):
      for b, block in enumerate(seq):
        block.load_flax(params[f"{prefix}_block{b}{getattr(block, 'param_suffix', '')}"])

    load_conv(self.intro, params["intro"])
    load_conv(self.ending, params["ending"])
    blocks(self.middle, "middle")
    for level in range(self.depth):
      blocks(self.encoders[level], f"encoder{level + 1}")
      blocks(self.decoders[level], f"decoder{level + 1}")
      load_conv(self.downs[level], params[f"down{level + 1}"])
      load_conv(self.ups[level], params[f"up{level + 1}"])
    for name, module in self.before_up.items():
      module.load_flax(params[name])
    return self
