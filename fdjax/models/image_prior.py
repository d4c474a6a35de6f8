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

The value is computed from whatever the network is given (a whole test image), unless
the caller gives it: an input of ``3 + cue_channels(prior)`` channels already holds the
cue in its trailing channels. Tiled inference (``fdjax.predictor``) gives every tile the
whole image's cue that way, and restoration training can
(``restoration.prior_context = 'tile'``, ``fdjax.tasks.restoration_views``): the cue of
the whole degraded training tile a patch is cut from, since a 48x48 patch's own value
is a poor stand-in for a whole image's (BUILD_NOTES.md, "The haze cue of a whole
image").
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PRIORS = ("none", "dark_channel")
DARK_WINDOW = 7        # pixels; rain streaks are about 2 pixels wide
DARK_QUANTILE = 0.01   # of the dark channel's pixels, per image


def dark_channel(x, window: int = DARK_WINDOW):
  """float ``[B, H, W, C]`` -> ``[B, H, W, 1]``: the minimum over R, G, B and over the
  ``window`` x ``window`` neighbourhood (truncated at the borders, as
  ``scipy.ndimage.minimum_filter(mode='nearest')``); same units as ``x``. The square's
  minimum is taken as a column's then a row's (16x faster than the square on XLA:CPU)."""
  darkest = -jnp.min(x, axis=-1, keepdims=True)
  darkest = nn.max_pool(darkest, (window, 1), strides=(1, 1), padding="SAME")
  return -nn.max_pool(darkest, (1, window), strides=(1, 1), padding="SAME")


def dark_channel_level(x, quantile: float = DARK_QUANTILE, window: int = DARK_WINDOW):
  """float ``[B, H, W, C]`` -> ``[B]``: the ``quantile`` (linear interpolation, as
  ``np.quantile``) of each image's dark channel; same units as ``x``. Only the two order
  statistics it interpolates are found (``lax.top_k``, not a full sort: 17x faster on
  XLA:CPU for a 192x192 tile)."""
  dark = dark_channel(x, window).reshape(x.shape[0], -1)
  position = quantile * (dark.shape[1] - 1)
  low = int(np.floor(position))
  smallest = -jax.lax.top_k(-dark, min(low + 2, dark.shape[1]))[0]   # ascending
  high = smallest[:, min(low + 1, dark.shape[1] - 1)]
  return smallest[:, low] + (position - low) * (high - smallest[:, low])


def cue_channels(prior: str) -> int:
  """How many channels ``prior`` adds to the RGB input (0 for 'none')."""
  if prior not in PRIORS:
    raise ValueError(f"unknown image prior {prior!r}; choose from {PRIORS}")
  return 0 if prior == "none" else 1


def image_cue(x, prior: str):
  """float ``[B, H, W, 3]`` in 0..1 -> float ``[B, cue_channels(prior)]``: the cue of
  each whole image (for 'dark_channel' its dark-channel level, 0..1)."""
  if cue_channels(prior) == 0:
    return jnp.zeros(x.shape[:1] + (0,), jnp.float32)
  return dark_channel_level(jnp.asarray(x, jnp.float32))[:, None]


def attach_cue(x, cue):
  """``x`` ``[B, H, W, 3]`` and ``cue`` ``[B, n]`` -> ``[B, H, W, 3 + n]``, the cue
  constant over each image's pixels, in ``x``'s dtype (the units are the caller's)."""
  cue = jnp.asarray(cue, x.dtype)
  return jnp.concatenate(
      [x, jnp.broadcast_to(cue[:, None, None, :], x.shape[:3] + cue.shape[-1:])], axis=-1)


def cue_of(images, prior: str):
  """``images`` ``[B, H, W, 3]`` in 0..255 (uint8 or float) -> float32 ``[B,
  cue_channels(prior)]``: each image's cue on the same 0..255 scale."""
  return image_cue(jnp.asarray(images, jnp.float32) / 255.0, prior) * 255.0


def with_cue(images, prior: str, context=None):
  """``images`` ``[B, H, W, 3]`` in 0..255 (uint8 or float) -> ``images`` themselves when
  ``prior`` adds no channel, else float32 ``[B, H, W, 3 + n]`` in 0..255 with the cue of
  ``context`` (``[B, h, w, 3]`` in 0..255, of any size; default ``images``) in its
  trailing channels, on the same 0..255 scale: what ``with_image_prior`` takes as given
  once the task maps the input to 0..1. Tiled inference gives each tile its whole
  image's cue this way (training a patch its tile's: ``restoration_views.tile_cue``)."""
  if cue_channels(prior) == 0:
    return images
  context = images if context is None else context
  return attach_cue(jnp.asarray(images, jnp.float32), cue_of(context, prior))


def with_image_prior(x, prior: str):
  """``x`` float ``[B, H, W, 3]`` in 0..1 -> the network's input: ``x`` itself for
  'none', ``[B, H, W, 4]`` with the image's dark-channel level as a constant fourth
  channel for 'dark_channel'. An ``x`` of ``3 + cue_channels(prior)`` channels already
  holds its cue (computed by the caller from a larger context) and is returned as is."""
  extra = cue_channels(prior)
  if x.shape[-1] == 3 + extra:
    return x
  if x.shape[-1] != 3:
    raise ValueError(f"image prior {prior!r} needs [B, H, W, 3] images or "
                     f"[B, H, W, {3 + extra}] with the cue given, got {x.shape}")
  return attach_cue(x, image_cue(x, prior))
