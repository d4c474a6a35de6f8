"""The CIFAR ResNet of ``fdjax.models.resnet`` in plain ``torch.nn`` (NCHW), for benchmarks.

Same architecture, layer for layer: 3x3 stem conv (16 channels, no bias) + BN +
ReLU; three stages of 16/32/64 channels with ``(depth - 2) // 6`` basic blocks
each (stride 2 on the first block of stages 2 and 3); a 1x1 conv + BN shortcut
wherever the shape changes; global-average-pool (``head='gap'``) or 2x2
adaptive-average-pool + flatten (``head='reference'``) into a linear classifier.
BatchNorm uses PyTorch momentum 0.1 / eps 1e-5 (flax momentum 0.9), convolutions
the ``kaiming_normal_(mode='fan_out')`` init of the flax model. The trainable
parameter count equals the flax model's ``params`` count (BN running statistics
are buffers in torch and ``batch_stats`` in flax; neither is counted).

Importing this module requires ``torch``.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

STAGE_WIDTHS = (16, 32, 64)


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
  conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)
  nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
  return conv


class BasicBlock(nn.Module):
  """conv3x3-BN-ReLU-conv3x3-BN plus (projection) shortcut, then ReLU."""

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv1 = _conv(cin, cout, 3, stride)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = _conv(cout, cout, 3)
    self.bn2 = nn.BatchNorm2d(cout)
    self.shortcut = nn.Identity()
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(self.shortcut(x) + y)


class CifarResNet(nn.Module):
  """CIFAR ResNet-(6n+2) on NCHW float32 inputs ``[B, 3, H, W]``; returns logits ``[B, C]``."""

  def __init__(self, depth: int = 56, num_classes: int = 10, head: str = "gap"):
    super().__init__()
    if (depth - 2) % 6 or depth < 8:
      raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
    if head not in ("gap", "reference"):
      raise ValueError(f"head must be 'gap' or 'reference', got {head!r}")
    n = (depth - 2) // 6
    self.head = head
    self.stem_conv = _conv(3, STAGE_WIDTHS[0], 3)
    self.stem_norm = nn.BatchNorm2d(STAGE_WIDTHS[0])
    blocks, cin = [], STAGE_WIDTHS[0]
    for stage, width in enumerate(STAGE_WIDTHS):
      for block in range(n):
        blocks.append(BasicBlock(cin, width, 2 if stage > 0 and block == 0 else 1))
        cin = width
    self.blocks = nn.Sequential(*blocks)
    pooled = cin if head == "gap" else cin * 4
    self.classifier = nn.Linear(pooled, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(self.stem_norm(self.stem_conv(x)))
    x = self.blocks(x)
    if self.head == "gap":
      x = x.mean(dim=(2, 3))
    else:
      x = F.adaptive_avg_pool2d(x, 2).flatten(1)
    return self.classifier(x)


def cifar_resnet(depth: int, num_classes: int = 10, head: str = "gap") -> CifarResNet:
  """Builds the torch twin of ``fdjax.models.cifar_resnet(depth, num_classes, head)``."""
  return CifarResNet(depth, num_classes, head)


def param_count(model: nn.Module) -> int:
  """Number of trainable scalars (BN running statistics excluded)."""
  return sum(p.numel() for p in model.parameters() if p.requires_grad)
