"""Models returning ``(outputs, features)``: CIFAR ResNets (logits) with their input
normalisation, and U-Net image restorers (``UNet``, ``NAFNet``: residual images)."""

from fdjax.models.nafnet import NAFBlock, NAFNet
from fdjax.models.preprocess import CHANNEL_STATS, normalize
from fdjax.models.resnet import DEPTHS, STAGE_WIDTHS, BasicBlock, CifarResNet, cifar_resnet
from fdjax.models.unet import ConvBlock, UNet, pixel_shuffle

__all__ = ["CHANNEL_STATS", "DEPTHS", "STAGE_WIDTHS", "BasicBlock", "CifarResNet", "ConvBlock",
           "NAFBlock", "NAFNet", "UNet", "cifar_resnet", "normalize", "pixel_shuffle"]
