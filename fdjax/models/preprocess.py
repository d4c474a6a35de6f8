"""Input normalisation: uint8 images 0..255 -> float32 per-channel standardised.

The reference code does ``ToTensor`` (divide by 255) then ``Normalize(mean, std)``
with per-data-set statistics given in 0..255 units below.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

# (mean, std) per channel, 0..255 units, from the FusionDistill / ILIAC code.
CHANNEL_STATS = {
    "cifar10": ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    "cifar100": ((129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    # Plain scaling to roughly [-1, 1] for data sets without published statistics.
    "unit": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
}


def normalize(images, stats: str = "cifar10"):
  """images: uint8 or float ``[..., 3]`` in 0..255 -> float32 ``(x - mean) / std``."""
  if stats not in CHANNEL_STATS:
    raise ValueError(f"unknown normalisation stats {stats!r}; choose from {sorted(CHANNEL_STATS)}")
  mean, std = (np.asarray(v, np.float32) for v in CHANNEL_STATS[stats])
  return (jnp.asarray(images, jnp.float32) - mean) / std
