"""U-Net image restorers: the shared skeleton and the plain 3x3-convolution U-Net.

Both restorers here and in ``nafnet.py`` are the same U-Net around different blocks,
NAFNet's layout (Chen et al. 2022). Restormer/PromptIR share the U shape but not its
resampling or skips: they go down with conv3x3 (c -> c/2) + pixel unshuffle and up with
conv3x3 (c -> 2c) + pixel shuffle, concatenate the skips (then a 1x1 conv at levels 3
and 2; the top decoder level runs at twice the width), add refinement blocks and use
bias-free convolutions::

    intro 3x3 conv (3 -> width)
    encoder level l = 1..depth:  blocks[l] blocks at width * 2^(l-1) channels -> skip l,
                                 2x2 stride-2 conv (channels x2, resolution /2)
    middle:                      middle_blocks blocks at width * 2^depth channels
    decoder level l = depth..1:  1x1 conv (c -> 2c) + pixel shuffle x2 (-> c / 2 channels,
                                 resolution x2), + skip l, decoder_blocks[l] blocks
    ending 3x3 conv (width -> 3);  output = input + ending   (a residual image)

Inputs are float ``[B, H, W, 3]`` in the task's normalised space (0..1 for
``fdjax.tasks.restoration``) with H and W divisible by ``stride = 2**depth`` (pad with
``fdjax.eval.inference.pad_to_multiple``); the output image is float32 in the same space
and shape. ``apply(variables, x, train)`` returns ``(image, features)`` like the
classifiers; ``features`` holds ``'encoder<l>'`` (the skips), ``'bottleneck'`` (the
middle's output, ``[B, H / stride, W / stride, width * stride]``: the distillation
feature) and ``'decoder<l>'``. There is no BatchNorm (``train`` changes nothing; the
``batch_stats`` collection stays empty).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from fdjax.models.image_prior import cue_channels, with_image_prior

# blocks(channels, name) -> a module mapping [B, H, W, channels] to the same shape.
BlockFactory = Callable[[int, str], nn.Module]


def per_level(blocks: int | Sequence[int], depth: int, what: str) -> tuple[int, ...]:
  """``blocks`` as one count per level, top level first (an int repeats)."""
  if isinstance(blocks, int):
    blocks = (blocks,) * depth
  blocks = tuple(int(b) for b in blocks)
  if len(blocks) != depth or min(blocks, default=0) < 0:
    raise ValueError(f"{what} must be an int or {depth} counts >= 0 (one per level), got "
                     f"{blocks}")
  return blocks


def pixel_shuffle(x, factor: int = 2):
  """PyTorch ``PixelShuffle``: ``[B, H, W, C * f * f] -> [B, H * f, W * f, C]``, input
  channel ``c * f * f + i * f + j`` going to output pixel offset ``(i, j)``."""
  b, h, w, c = x.shape
  if c % (factor * factor):
    raise ValueError(f"pixel_shuffle x{factor} needs channels divisible by {factor ** 2}, "
                     f"got {c}")
  c_out = c // (factor * factor)
  x = x.reshape(b, h, w, c_out, factor, factor)
  return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, h * factor, w * factor, c_out)


def check_input(x, stride: int, name: str, cue: int = 0) -> None:
  """``x`` ``[B, H, W, 3]`` (or ``3 + cue`` channels, an image prior's cue given) with H
  and W divisible by ``stride``."""
  if x.ndim != 4 or x.shape[-1] not in {3, 3 + cue}:
    shapes = "[B, H, W, 3]" + (f" or [B, H, W, {3 + cue}]" if cue else "")
    raise ValueError(f"{name} expects images {shapes}, got shape {x.shape}")
  if x.shape[1] % stride or x.shape[2] % stride:
    raise ValueError(f"{name} needs H and W divisible by its stride {stride}, got "
                     f"{x.shape[1]}x{x.shape[2]}; pad with "
                     f"fdjax.eval.inference.pad_to_multiple (tasks' predict does)")


def unet(x, block: BlockFactory, *, width: int, depth: int, blocks: Sequence[int],
         middle_blocks: int, decoder_blocks: Sequence[int], dtype: Any,
         before_up: Callable | None = None, extras: dict | None = None,
         image_prior: str = "none"):
  """The skeleton of the module docstring, as submodules of the calling compact module.

  ``x`` float ``[B, H, W, 3]`` (or ``3 + cue_channels(image_prior)`` channels, the cue
  given); returns ``(image float32 [B, H, W, 3], features)``; the residual adds to RGB.

  ``block(channels, name)`` is called for every block; its name says where it sits
  (``'encoder<l>_block<b>'``, ``'middle_block<b>'``, ``'decoder<l>_block<b>'``). A block
  may return ``(x, info)`` instead of ``x`` (a routed block's gates and balance loss):
  ``info`` is then stored as ``extras[name]`` (``extras`` must be a dict).
  ``before_up(x, level, channels) -> x`` (optional) transforms the input of decoder
  level ``level``'s up-sampling (PromptIR's prompt blocks), channels unchanged.
  ``image_prior``: an image-level cue the intro convolution sees as extra input channels
  (``fdjax.models.image_prior``; 'none': the RGB input alone).
  """

  def run(name, channels, x):
    out = block(channels, name)(x)
    if isinstance(out, tuple):
      out, info = out
      extras[name] = info
    return out

  inputs = x[..., :3]
  x = with_image_prior(x, image_prior)
  x = nn.Conv(width, (3, 3), padding=1, dtype=dtype, name="intro")(x.astype(dtype))
  features, skips = {}, []
  channels = width
  for level in range(depth):
    for b in range(blocks[level]):
      x = run(f"encoder{level + 1}_block{b}", channels, x)
    features[f"encoder{level + 1}"] = x
    skips.append(x)
    channels *= 2
    x = nn.Conv(channels, (2, 2), strides=2, padding="VALID", dtype=dtype,
                name=f"down{level + 1}")(x)
  for b in range(middle_blocks):
    x = run(f"middle_block{b}", channels, x)
  features["bottleneck"] = x
  for level in reversed(range(depth)):
    if before_up is not None:
      x = before_up(x, level + 1, channels)
    x = nn.Conv(channels * 2, (1, 1), use_bias=False, dtype=dtype, name=f"up{level + 1}")(x)
    x = pixel_shuffle(x) + skips[level]
    channels //= 2
    for b in range(decoder_blocks[level]):
      x = run(f"decoder{level + 1}_block{b}", channels, x)
    features[f"decoder{level + 1}"] = x
  x = nn.Conv(3, (3, 3), padding=1, dtype=dtype, name="ending")(x)
  return inputs.astype(jnp.float32) + x.astype(jnp.float32), features


class ConvBlock(nn.Module):
  """``x + conv3x3(relu(conv3x3(x)))``, channels unchanged."""

  channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Conv(self.channels, (3, 3), padding=1, dtype=self.dtype, name="conv1")(x)
    y = nn.Conv(self.channels, (3, 3), padding=1, dtype=self.dtype, name="conv2")(nn.relu(y))
    return x + y


class UNetShape(nn.Module):
  """The shape options every U-Net here shares (see ``UNet``'s attributes)."""

  width: int = 16
  depth: int = 2
  blocks: int | tuple[int, ...] = 1
  middle_blocks: int = 1
  decoder_blocks: int | tuple[int, ...] | None = None
  dtype: Any = jnp.float32
  image_prior: str = "none"

  @property
  def stride(self) -> int:
    return 2 ** self.depth

  @property
  def pools_globally(self) -> bool:
    """Whether an output pixel depends on statistics pooled over the whole input (channel
    attention, a prompt, a router's prompt): tiles then differ from the whole image
    however wide their margin (``fdjax.predictor``). The plain U-Net's do not."""
    return False

  @property
  def feature_names(self) -> tuple[str, ...]:
    """The keys of the distillable features the network returns (each level's activation,
    ``[B, h, w, c]``): what ``config.distill_feature`` may name. A subclass may return
    more (PromptIR's prompts, MEASNet's router and losses), which are not among them."""
    return (*(f"encoder{i + 1}" for i in range(self.depth)), "bottleneck",
            *(f"decoder{i + 1}" for i in range(self.depth)))

  def levels(self, x, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Checks ``x`` against the stride; ``(encoder, decoder)`` blocks per level."""
    check_input(x, self.stride, name, cue_channels(self.image_prior))
    enc = per_level(self.blocks, self.depth, "blocks")
    dec = enc if self.decoder_blocks is None else per_level(self.decoder_blocks, self.depth,
                                                            "decoder_blocks")
    return enc, dec


def conv_blocks(dtype: Any = jnp.float32) -> BlockFactory:
  """The plain U-Net's block factory: ``ConvBlock(channels, dtype, name=name)``."""
  return lambda channels, name: ConvBlock(channels, dtype, name=name)


class UNet(UNetShape):
  """The plain 3x3-convolution U-Net (residual ReLU blocks; see the module docstring).

  Attributes:
    width: channels of the top level (doubled at every level down).
    depth: down-sampling levels; H and W must be divisible by ``stride = 2**depth``.
    blocks: ConvBlocks per encoder level (int, or one count per level, top first).
    middle_blocks: ConvBlocks at the bottom.
    decoder_blocks: ConvBlocks per decoder level (default: as ``blocks``).
    dtype: computation dtype; parameters and the output stay float32.
    image_prior: 'none' or 'dark_channel' (``fdjax.models.image_prior``): an
      image-level cue given to the intro convolution as a fourth input channel.
  """

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x float ``[B, H, W, 3]`` in 0..1 (4 channels: ``image_prior``'s cue given); returns
    ``(image float32 [B, H, W, 3], features)``."""
    del train  # no BatchNorm or dropout
    enc, dec = self.levels(x, "UNet")
    return unet(x, conv_blocks(self.dtype), width=self.width, depth=self.depth, blocks=enc,
                middle_blocks=self.middle_blocks, decoder_blocks=dec, dtype=self.dtype,
                image_prior=self.image_prior)
