"""Image-level cues a restorer may take beside its RGB input (``restoration.image_prior``).

'dark_channel': how much the image's darkest pixels are raised, a haze cue. The dark
channel of He, Sun and Tang (CVPR 2009) is the minimum over a ``DARK_WINDOW`` x
``DARK_WINDOW`` window of the minimum over R, G, B; outdoor photos without haze have
some near-black pixels, and haze lifts every pixel towards the airlight. Its
``DARK_QUANTILE`` quantile over the whole image is one number per image, fed to the
network as a constant fourth input channel. Measured on this repository's data
(BUILD_NOTES.md, "An image-level haze cue"): 0 levels of 255 on 15 of the first 24
Rain100L rainy photos and at most 50 (thin rain streaks never fill a whole window), at
least 53 on every one of 24 CBSD68 photos hazed at beta 1, so real rain and haze, which
a patch-local network confuses, differ here. Training patches are small (48x48) and a
bright clean patch can have a high value too: the cue is one-sided (low = no haze),
which is the side the confusion needed.

The value is computed from whatever the network is given: a training patch, a whole
test image, or one tile of a tiled inference (``fdjax.eval.inference``), which then
sees its own tile's darkest pixels.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

PRIORS = ("none", "dark_channel")
DARK_WINDOW = 7        # pixels; rain streaks are about 2 pixels wide
DARK_QUANTILE = 0.01   # of the dark channel's pixels, per image


def dark_channel(x, window: int = DARK_WINDOW):
  """float ``[B, H, W, C]`` -> ``[B, H, W, 1]``: the minimum over R, G, B and over the
  ``window`` x ``window`` neighbourhood (truncated at the borders, as
  ``scipy.ndimage.minimum_filter(mode='nearest')``); same units as ``x``."""
  darkest = jnp.min(x, axis=-1, keepdims=True)
  return -nn.max_pool(-darkest, (window, window), strides=(1, 1), padding="SAME")


def dark_channel_level(x, quantile: float = DARK_QUANTILE, window: int = DARK_WINDOW):
  """float ``[B, H, W, C]`` -> ``[B]``: the ``quantile`` (linear interpolation, as
  ``np.quantile``) of each image's dark channel; same units as ``x``."""
  dark = dark_channel(x, window)
  return jnp.quantile(dark.reshape(dark.shape[0], -1), quantile, axis=1)


def with_image_prior(x, prior: str):
  """``x`` float ``[B, H, W, 3]`` -> the network's input: ``x`` itself for 'none',
  ``[B, H, W, 4]`` with the image's dark-channel level as a constant fourth channel for
  'dark_channel'."""
  if prior == "none":
    return x
  if prior == "dark_channel":
    level = dark_channel_level(x)
    return jnp.concatenate(
        [x, jnp.broadcast_to(level[:, None, None, None], x.shape[:3] + (1,))], axis=-1)
  raise ValueError(f"unknown image prior {prior!r}; choose from {PRIORS}")
