"""Device mesh and shardings: one ``data`` axis over every device.

Batches are split along their leading axis over ``data``; parameters, batch
statistics and optimiser state are replicated. The same code runs on 1 CPU,
8 simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``),
a GPU or a TPU slice: only the mesh size changes.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis ``data`` over ``devices`` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError("make_mesh needs at least one device")
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``data``, other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """The same full copy on every device."""
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """Raises if ``batch_size`` does not divide evenly over the ``data`` axis."""
  n = mesh.shape[DATA_AXIS]
  if batch_size % n:
    raise ValueError(
        f"batch size {batch_size} must be divisible by the number of devices on the "
        f"'{DATA_AXIS}' mesh axis ({n}); pick a multiple of {n}")
