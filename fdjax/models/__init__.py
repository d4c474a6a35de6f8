"""Models returning ``(outputs, features)``: CIFAR ResNets (logits) with their input
normalisation, and U-Net image restorers (``UNet``, ``NAFNet``, ``PromptIR``, ``MEASNet``:
the input plus a learned residual)."""

from fdjax.models.measnet import MEASNet
from fdjax.models.nafnet import NAFBlock, NAFNet
from fdjax.models.preprocess import CHANNEL_STATS, normalize
from fdjax.models.resnet import DEPTHS, STAGE_WIDTHS, BasicBlock, CifarResNet, cifar_resnet
from fdjax.models.promptir import PromptIR
from fdjax.models.unet import ConvBlock, UNet, pixel_shuffle

__all__ = ["CHANNEL_STATS", "DEPTHS", "STAGE_WIDTHS", "BasicBlock", "CifarResNet", "ConvBlock",
           "MEASNet", "NAFBlock", "NAFNet", "PromptIR", "UNet", "cifar_resnet", "normalize", "pixel_shuffle"]
