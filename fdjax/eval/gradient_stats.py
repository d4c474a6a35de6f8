"""A cheap perceptual proxy needing no trained network: how far the distribution of
local gradient magnitudes of a restored image is from that of its clean image.

Blurry restorations (what an L1-trained super-resolver produces) lack the large
gradients of real textures and edges; a restoration with realistic detail has a
gradient histogram like the clean image's, wherever that detail sits. So the 1-D
Wasserstein-1 distance between the two images' gradient-magnitude distributions
measures texture realism without pixel alignment (unlike PSNR), in the spirit of the
perception index of Blau & Michaeli (a divergence between the outputs' and natural
images' statistics). It is a proxy, not NIQE: lower is better, 0 for the clean image.

Per image: luma (BT.601 Y, as ``fdjax.eval.image_quality``) or RGB, ``shave`` border
pixels dropped, forward differences ``dx``, ``dy`` on the ``[H-1, W-1]`` grid,
``g = sqrt(dx^2 + dy^2)`` in 0..255 units (at most ``255 sqrt 2`` = ``GRADIENT_MAX``);
with equally many samples in both images, ``W1 = mean |sort(g_restored) -
sort(g_clean)|`` (equals ``scipy.stats.wasserstein_distance``; tested).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fdjax.eval.image_quality import prepare

GRADIENT_MAX = float(255.0 * np.sqrt(2.0))  # the largest W1 between two 0..255 images


def gradient_magnitudes(images) -> jax.Array:
  """float32 ``[..., (H-1) * (W-1) * C]``: forward-difference gradient magnitudes of
  ``[..., H, W, C]`` images, flattened per image."""
  images = jnp.asarray(images, jnp.float32)
  dy = images[..., 1:, :-1, :] - images[..., :-1, :-1, :]
  dx = images[..., :-1, 1:, :] - images[..., :-1, :-1, :]
  g = jnp.sqrt(dx * dx + dy * dy)
  return g.reshape(g.shape[:-3] + (-1,))


@functools.partial(jax.jit, static_argnames=("y_channel", "shave"))
def gradient_w1(restored, clean, *, y_channel: bool = True, shave: int = 0) -> jax.Array:
  """float32 ``[]`` or ``[B]``: per image, the Wasserstein-1 distance (0..255 units)
  between the gradient-magnitude distributions of ``restored`` and ``clean`` (0..255,
  ``[H, W, 3]`` or ``[B, H, W, 3]``; module docstring)."""
  if jnp.shape(restored) != jnp.shape(clean):
    raise ValueError(f"gradient_w1: images must share a shape, got {jnp.shape(restored)} "
                     f"and {jnp.shape(clean)}")
  a = gradient_magnitudes(prepare(restored, y_channel=y_channel, shave=shave))
  b = gradient_magnitudes(prepare(clean, y_channel=y_channel, shave=shave))
  return jnp.mean(jnp.abs(jnp.sort(a, axis=-1) - jnp.sort(b, axis=-1)), axis=-1)
