"""NAFNet's block in plain ``torch.nn`` (NCHW), for benchmarks: the PyTorch peer of
``fdjax.models.NAFNet`` is ``fdjax.bench.torch_unet.UNet(..., block=NAFBlock)``.

Written from the block as NAFNet's paper and code define it (Chen et al. 2022,
``basicsr/models/archs/NAFNet_arch.py``; ``fdjax.models.nafnet``'s docstring)::

    y = x + beta  * conv3(SCA(SimpleGate(dwconv3x3(conv1(LayerNorm2d(x))))))
    z = y + gamma * conv5(SimpleGate(conv4(LayerNorm2d(y))))

with ``dw_expand * c`` channels in the depthwise branch and ``ffn_expand * c`` in the
feed-forward one (both gated to half), SCA = ``x * conv1x1(AdaptiveAvgPool2d(1)(x))``,
``beta`` and ``gamma`` ``[1, c, 1, 1]``, zero at initialisation, and no dropout (its
``drop_out_rate`` 0). One difference from NAFNet's code, of speed only: ``LayerNorm2d``
is written as tensor operations that autograd differentiates, where NAFNet's code gives
it a hand-written backward (``LayerNormFunction``) to save memory; both compute the same
values and gradients.

Importing this module requires ``torch``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fdjax.bench.torch_unet import load_conv


class LayerNorm2d(nn.Module):
  """LayerNorm over the channels of every pixel of ``[B, C, H, W]``: the mean of squared
  deviations as the variance, ``eps`` inside the square root, then per-channel
  ``weight`` and ``bias`` (flax's ``scale`` and ``bias``)."""

  def __init__(self, channels: int, eps: float = 1e-6):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(channels))
    self.bias = nn.Parameter(torch.zeros(channels))
    self.eps = eps

  def forward(self, x):
    mu = x.mean(1, keepdim=True)
    var = (x - mu).pow(2).mean(1, keepdim=True)
    y = (x - mu) / (var + self.eps).sqrt()
    return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)

  @torch.no_grad()
  def load_flax(self, p) -> None:
    self.weight.copy_(torch.from_numpy(np.array(p["scale"])))
    self.bias.copy_(torch.from_numpy(np.array(p["bias"])))


def simple_gate(x):
  """``[B, 2c, H, W] -> [B, c, H, W]``: the first half of the channels times the second."""
  a, b = x.chunk(2, dim=1)
  return a * b


class NAFBlock(nn.Module):
  """NAFNet's block on ``channels`` channels (module docstring); channels unchanged."""

  def __init__(self, channels: int, dw_expand: int = 2, ffn_expand: int = 2):
    super().__init__()
    c, dw, ffn = channels, dw_expand * channels, ffn_expand * channels
    self.norm1, self.norm2 = LayerNorm2d(c), LayerNorm2d(c)
    self.conv1 = nn.Conv2d(c, dw, 1)
    self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
    self.pool = nn.AdaptiveAvgPool2d(1)
    self.sca = nn.Conv2d(dw // 2, dw // 2, 1)
    self.conv3 = nn.Conv2d(dw // 2, c, 1)
    self.conv4 = nn.Conv2d(c, ffn, 1)
    self.conv5 = nn.Conv2d(ffn // 2, c, 1)
    self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
    self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

  def forward(self, x):
    y = simple_gate(self.conv2(self.conv1(self.norm1(x))))
    y = self.conv3(y * self.sca(self.pool(y)))
    y = x + y * self.beta
    z = self.conv5(simple_gate(self.conv4(self.norm2(y))))
    return y + z * self.gamma

  @torch.no_grad()
  def load_flax(self, p) -> None:
    """Copies a flax ``fdjax.models.nafnet.NAFBlock``'s parameters ``p`` in place."""
    self.norm1.load_flax(p["norm1"])
    self.norm2.load_flax(p["norm2"])
    for mine, theirs in (("conv1", "conv1"), ("conv2", "dwconv"), ("sca", "sca"),
                         ("conv3", "conv3"), ("conv4", "conv4"), ("conv5", "conv5")):
      load_conv(getattr(self, mine), p[theirs])
    self.beta.copy_(torch.from_numpy(np.array(p["beta"]).reshape(1, -1, 1, 1)))
    self.gamma.copy_(torch.from_numpy(np.array(p["gamma"]).reshape(1, -1, 1, 1)))
