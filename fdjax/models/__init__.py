"""Models: CIFAR ResNets returning ``(logits, features)`` and their input normalisation."""

from fdjax.models.preprocess import CHANNEL_STATS, normalize
from fdjax.models.resnet import DEPTHS, STAGE_WIDTHS, BasicBlock, CifarResNet, cifar_resnet

__all__ = ["CHANNEL_STATS", "DEPTHS", "STAGE_WIDTHS", "BasicBlock", "CifarResNet", "cifar_resnet", "normalize"]
