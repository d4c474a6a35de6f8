"""A PromptIR-style restorer (Potlapalli et al., "PromptIR: Prompting for All-in-One
Blind Image Restoration", NeurIPS 2023): the plain U-Net of ``fdjax.models.unet`` with
prompt blocks in the decoder.

Before every up-sampling into decoder level l (PromptIR's prompt3, prompt2, prompt1 sit
before the up-samplings of its 4-level Restormer: at the latent and at the outputs of
decoder levels 3 and 2), the features ``x [B, h, w, c]`` pass through::

    w      = softmax(Dense(GAP(x)))                      # [B, N]: weights of N prompt components
    prompt = sum_n w[n] * P_n                            # P [N, S, S, d]: learned components
    prompt = conv3x3(resize_bilinear(prompt, h x w))     # PGM: [B, h, w, d]
    x      = conv1x1_{c+d -> c}(ConvBlock_{c+d}([x, prompt]))   # PIM: concatenate and fuse

(PGM = prompt generation module, PIM = prompt interaction module, whose transformer
block is a plain ``ConvBlock`` here; the skeleton around them is NAFNet's, not
PromptIR's Restormer: see ``fdjax.models.unet`` for how the two differ.) PromptIR's sizes: prompt1 d 64, S 64; prompt2
d 128, S 32; prompt3 d 320, S 16; N = 5. Here ``d = prompt_dim * 2^(l-1)`` and
``S = prompt_size / 2^(l-1)`` (at least 1) for decoder level l (1 = top), N =
``num_prompts``.

Inputs, outputs, ``stride`` and ``features`` as for ``UNet``, plus ``'prompt<l>'``: the
prompt ``[B, h, w, d]`` mixed into the input of the up-sampling into decoder level l.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from fdjax.models.unet import ConvBlock, UNetShape, conv_blocks, unet


class PromptBlock(nn.Module):
  """PGM + PIM of the module docstring: ``[B, h, w, c] -> ([B, h, w, c], prompt [B, h, w,
  prompt_dim])``.

  Attributes:
    channels: c.
    prompt_dim: d, channels of each prompt component.
    prompt_size: S, side of each learned component (resized to the features' h x w).
    num_prompts: N components.
  """

  channels: int
  prompt_dim: int
  prompt_size: int
  num_prompts: int = 5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, _ = x.shape
    dt = self.dtype
    weights = nn.softmax(nn.Dense(self.num_prompts, name="weights")(
        jnp.mean(x.astype(jnp.float32), axis=(1, 2))), axis=-1)              # [B, N]
    components = self.param("components", nn.initializers.uniform(1.0),
                            (self.num_prompts, self.prompt_size, self.prompt_size,
                             self.prompt_dim))                               # PromptIR: rand
    prompt = jnp.einsum("bn,nijd->bijd", weights, components)                # [B, S, S, d]
    prompt = jax.image.resize(prompt, (b, h, w, self.prompt_dim), "bilinear",
                              antialias=False)   # as torch interpolate
    prompt = nn.Conv(self.prompt_dim, (3, 3), padding=1, use_bias=False, dtype=dt,
                     name="prompt_conv")(prompt.astype(dt))
    y = jnp.concatenate([x.astype(dt), prompt], axis=-1)
    y = ConvBlock(self.channels + self.prompt_dim, dt, name="interaction")(y)
    return nn.Conv(self.channels, (1, 1), use_bias=False, dtype=dt, name="reduce")(y), prompt


class PromptIR(UNetShape):
  """The PromptIR-style U-Net (module docstring).

  Attributes:
    width, depth, blocks, middle_blocks, decoder_blocks, dtype: as for ``UNet``.
    prompt_dim: d of the top level's prompt (doubled per level down).
    prompt_size: S of the top level's prompt components (halved per level down).
    num_prompts: N components per prompt block (PromptIR: 5).
  """

  prompt_dim: int = 8
  prompt_size: int = 16
  num_prompts: int = 5

  @property
  def pools_globally(self) -> bool:
    """True: each prompt block weighs its prompts by features pooled over the whole
    input (``UNetShape.pools_globally``)."""
    return True

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x float ``[B, H, W, 3]`` in 0..1 (4 channels: ``image_prior``'s cue given); returns
    ``(image float32 [B, H, W, 3], features)``."""
    del train  # no BatchNorm or dropout
    enc, dec = self.levels(x, "PromptIR")
    prompts = {}

    def before_up(y, level, channels):
      """The input of the up-sampling into decoder level ``level`` (``width * 2^level``
      channels), prompted (PromptIR's prompt<level>)."""
      scale = 2 ** (level - 1)
      y, prompts[f"prompt{level}"] = PromptBlock(
          channels, self.prompt_dim * scale, max(1, self.prompt_size // scale),
          self.num_prompts, self.dtype, name=f"prompt{level}")(y)
      return y

    image, features = unet(x, conv_blocks(self.dtype), width=self.width, depth=self.depth,
                           blocks=enc, middle_blocks=self.middle_blocks,
                           decoder_blocks=dec, dtype=self.dtype, before_up=before_up,
                           image_prior=self.image_prior)
    features.update(prompts)
    return image, features
