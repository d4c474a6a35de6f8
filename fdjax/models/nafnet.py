"""A NAFNet-style restorer (Chen et al., "Simple Baselines for Image Restoration", 2022).

The U-Net of ``fdjax.models.unet`` around NAFNet's block, activation-free::

    y = x + beta  * conv1x1(SCA(SimpleGate(dwconv3x3(conv1x1_{c->2c}(LayerNorm(x))))))
    z = y + gamma * conv1x1(SimpleGate(conv1x1_{c->2c}(LayerNorm(y))))

* SimpleGate: split the channels in two halves and multiply them;
* SCA (simplified channel attention): ``x * conv1x1(global average pool(x))``;
* LayerNorm over the channels of every pixel (NAFNet's ``LayerNorm2d``, eps 1e-6, the
  variance as the mean of squared deviations, not E[x^2] - E[x]^2);
* ``beta``, ``gamma``: per-channel layer scales, zero at initialisation as in NAFNet
  (every block starts as the identity; they and then the branches learn from the first
  step on);
* dwconv3x3: ``fdjax.models.depthwise.DepthwiseConv``, ``nn.Conv``'s depthwise
  convolution (the same parameters) as shifted multiply-adds, which XLA:CPU runs far
  faster than its grouped convolution.

Inputs, outputs, ``stride`` and ``features`` as for ``UNet`` (see ``fdjax.models.unet``).
Note that SCA pools over the whole input, so tiled inference is not exactly the
whole-image result (NAFNet's TLC addresses this; not implemented). Also not as in
NAFNet's code: no dropout (its ``drop_out_rate``, 0 in its published configs);
``decoder_blocks`` lists the levels top first, where NAFNet's ``dec_blk_nums`` lists the
deepest first (reverse an asymmetric list when porting one); and whole images are padded
to the stride by reflection (``fdjax.eval.inference.pad_to_multiple``), where NAFNet's
``check_image_size`` pads with zeros.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fdjax.models.depthwise import DepthwiseConv
from fdjax.models.unet import UNetShape, unet


def simple_gate(x):
  """``[..., 2c] -> [..., c]``: first half of the channels times the second."""
  a, b = jnp.split(x, 2, axis=-1)
  return a * b


class NAFBlock(nn.Module):
  """NAFNet's block (module docstring); channels unchanged.

  Attributes:
    channels: input = output channels ``c``.
    dw_expand: the depthwise branch works on ``dw_expand * c`` channels (gated to half).
    ffn_expand: the feed-forward branch's hidden ``ffn_expand * c`` channels (gated to half).
    layer_scale_init: initial value of ``beta`` and ``gamma``.
  """

  channels: int
  dw_expand: int = 2
  ffn_expand: int = 2
  layer_scale_init: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c, dt = self.channels, self.dtype
    dw = self.dw_expand * c
    y = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, dtype=dt, name="norm1")(x)
    y = nn.Conv(dw, (1, 1), dtype=dt, name="conv1")(y)
    y = DepthwiseConv(dw, 3, dtype=dt, name="dwconv")(y)
    y = simple_gate(y)
    pooled = jnp.mean(y, axis=(1, 2), keepdims=True)
    y = y * nn.Conv(dw // 2, (1, 1), dtype=dt, name="sca")(pooled)
    y = nn.Conv(c, (1, 1), dtype=dt, name="conv3")(y)
    scale = nn.initializers.constant(self.layer_scale_init)
    x = x + y * self.param("beta", scale, (c,)).astype(dt)
    y = nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, dtype=dt, name="norm2")(x)
    y = nn.Conv(self.ffn_expand * c, (1, 1), dtype=dt, name="conv4")(y)
    y = nn.Conv(c, (1, 1), dtype=dt, name="conv5")(simple_gate(y))
    return x + y * self.param("gamma", scale, (c,)).astype(dt)


def naf_blocks(dw_expand: int = 2, ffn_expand: int = 2, layer_scale_init: float = 0.0,
               dtype: Any = jnp.float32):
  """NAFNet's block factory for ``fdjax.models.unet.unet``: ``NAFBlock(channels, ...)``."""
  return lambda channels, name: NAFBlock(channels, dw_expand, ffn_expand, layer_scale_init,
                                         dtype, name=name)


class NAFNet(UNetShape):
  """The NAFNet-style U-Net (see the module docstring and ``fdjax.models.unet.UNet``).

  Attributes:
    width, depth, blocks, middle_blocks, decoder_blocks, dtype: as for ``UNet``
      (NAFNet-width32 for deblurring is width 32, depth 4, blocks (1, 1, 1, 28),
      middle_blocks 1, decoder_blocks 1).
    dw_expand, ffn_expand, layer_scale_init: of every ``NAFBlock``.
  """

  dw_expand: int = 2
  ffn_expand: int = 2
  layer_scale_init: float = 0.0

  @property
  def pools_globally(self) -> bool:
    """True: each block's channel attention pools its features over the whole input
    (``UNetShape.pools_globally``)."""
    return True

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x float ``[B, H, W, 3]`` in 0..1 (4 channels: ``image_prior``'s cue given); returns
    ``(image float32 [B, H, W, 3], features)``."""
    del train  # no BatchNorm or dropout
    enc, dec = self.levels(x, "NAFNet")
    block = naf_blocks(self.dw_expand, self.ffn_expand, self.layer_scale_init, self.dtype)
    return unet(x, block, width=self.width, depth=self.depth, blocks=enc,
                middle_blocks=self.middle_blocks, decoder_blocks=dec, dtype=self.dtype,
                image_prior=self.image_prior)
