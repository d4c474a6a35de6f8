"""Device mesh and shardings: one ``data`` axis over every device.

Batches are split along their leading axis over ``data``; parameters, batch
statistics and optimiser state are replicated. The same code runs on 1 CPU,
8 simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``),
a GPU or a TPU slice: only the mesh size changes.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis ``data`` over ``devices`` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  if not devices:
    raise ValueError("make_mesh needs at least one device")
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def two_axis_mesh(axis: str, size: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 2-D mesh ``(data, axis)`` of shape ``(n / size, size)`` over ``devices`` (default:
  all): batches split over ``data`` as on ``make_mesh``'s, stacked models (experts,
  population members) over ``axis``. ``size`` must divide the device count."""
  devices = np.asarray(jax.devices() if devices is None else list(devices))
  if size < 1 or devices.size % size:
    raise ValueError(f"{axis} axis of size {size} must divide the {devices.size} devices")
  return Mesh(devices.reshape(-1, size), (DATA_AXIS, axis))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``data``, other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  """The same full copy on every device."""
  return NamedSharding(mesh, P())


def place(tree, sharding: NamedSharding, copy: bool = True):
  """``tree``'s leaves as arrays on ``sharding``; with ``copy`` each a private copy (a
  train step donates its state; the caller's arrays may be used again, e.g. as a frozen
  teacher).

  Every process passes the same values. With one process this is ``jax.device_put`` (of
  a copy). With several, each process builds its own devices' shards from its host copy
  (``jax.make_array_from_callback``), as ``device_put`` would after comparing every leaf
  across the processes: one collective per leaf, and a refusal of any NaN, which never
  equals itself (EA-Adam's fitness before its first evolutionary epoch). Leaves that are
  already global arrays are resharded by ``device_put`` (without ``copy``, one already
  on ``sharding`` is returned as it is, as with one process)."""
  if jax.process_count() == 1 and not copy:
    return jax.device_put(tree, sharding)
  if jax.process_count() == 1:
    # A private copy first: device_put(..., may_alias=False) alone still reuses the
    # caller's buffer as the first device's shard when the mesh has several devices.
    return jax.device_put(jax.tree.map(lambda x: jnp.array(x, copy=True), tree), sharding)

  def one(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.device_put(x, sharding, may_alias=False if copy else None)
    host = np.array(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(one, tree)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """Raises if ``batch_size`` does not divide evenly over the ``data`` axis."""
  n = mesh.shape[DATA_AXIS]
  if batch_size % n:
    raise ValueError(
        f"batch size {batch_size} must be divisible by the number of devices on the "
        f"'{DATA_AXIS}' mesh axis ({n}); pick a multiple of {n}")
