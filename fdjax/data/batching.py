"""Host-side batching of an ``ImageSet`` into device arrays.

A batch is a dict with one entry per field of the split, each the ``[B, ...]`` rows of
that field: for a classification split ``{'image': uint8 [B, H, W, 3] (0..255),
'label': int32 [B]}``, for a paired one ``{'image': uint8 [B, H, W, 3], 'target': uint8
[B, H, W, 3]}`` (both 0..255). Eval batches add ``'mask': bool [B]``. With ``sharding``
they are placed by ``jax.device_put(batch, sharding)`` (e.g. a ``NamedSharding``
splitting the leading axis over the mesh axis 'data'); without, on the default device.
``device_put`` is asynchronous, so the copy of batch i+1 overlaps the step on batch i
without a prefetch thread. Several processes (a multi-host run): each gathers only
the rows its own devices hold (``process_rows``) and the global batch is assembled by
``jax.make_array_from_process_local_data``.

Training order is a pure function of ``(seed, epoch)``, so a run resumed at step s
continues with exactly the batches it would have seen: epoch = s // steps_per_epoch,
``start_batch`` = s % steps_per_epoch.
"""

from __future__ import annotations

import functools
from typing import Iterator

import jax
import numpy as np

from fdjax.data.share_pools import ShareSplits
from fdjax.data.splits import ImageSet


def num_batches(num_examples: int, batch_size: int, drop_remainder: bool) -> int:
  """Batches per epoch: ``floor(N / B)`` with ``drop_remainder``, else ``ceil(N / B)``."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  if num_examples < 0:
    raise ValueError(f"num_examples must be >= 0, got {num_examples}")
  return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)


def epoch_order(num_examples: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  """int64 ``[N]``: a permutation from ``np.random.default_rng((seed, epoch))``, or 0..N-1."""
  if not shuffle:
    return np.arange(num_examples)
  return np.random.default_rng((seed, epoch)).permutation(num_examples)


@functools.lru_cache(maxsize=64)
def process_rows(sharding: jax.sharding.Sharding, batch_size: int) -> np.ndarray:
  """int64 ``[b]``: the rows of a ``[batch_size, ...]`` global batch that this process's
  devices hold under ``sharding``, in the order ``make_array_from_process_local_data``
  expects (the process's distinct row blocks, ascending). All rows in a one-process
  run; ``batch_size / process_count`` rows for a batch split over every device."""
  blocks = {index[0].indices(batch_size)[:2] if index else (0, batch_size)
            for index in sharding.addressable_devices_indices_map((batch_size,)).values()}
  return np.concatenate([np.arange(lo, hi) for lo, hi in sorted(blocks)])


def _put(fields: dict, rows: np.ndarray, sharding, valid: np.ndarray | None = None) -> dict:
  """The batch made of example ``rows[i]`` of every field in row i, placed by ``sharding``.

  ``valid`` (bool, like ``rows``): rows where it is False are zeros (padding). With a
  sharding, this process gathers only its ``process_rows`` and the rest come from the
  other processes; without, the whole batch goes to the default device.
  """
  if sharding is None:
    return jax.device_put(_gather(fields, rows, valid))
  mine = process_rows(sharding, len(rows))
  local = _gather(fields, rows[mine], None if valid is None else valid[mine])
  # One field at a time: JAX before 0.7 takes a single array here, not a dict of them.
  return {k: jax.make_array_from_process_local_data(sharding, v, (len(rows),) + v.shape[1:])
          for k, v in local.items()}


def _gather(fields: dict, rows: np.ndarray, valid: np.ndarray | None) -> dict:
  """``{field: values[rows]}``, zeros where ``valid`` is False; with ``'mask'`` = ``valid``."""
  if valid is None or valid.all():
    batch = {k: v[rows] for k, v in fields.items()}
    return batch if valid is None else dict(batch, mask=valid.copy())
  batch = {k: np.where(valid.reshape((-1,) + (1,) * (v.ndim - 1)), v[np.where(valid, rows, 0)],
                       np.zeros((), v.dtype)) for k, v in fields.items()}
  batch["mask"] = valid.copy()
  return batch


def train_batches(split: ImageSet | ShareSplits, batch_size: int, *, seed: int, epoch: int,
                  start_batch: int = 0, sharding: jax.sharding.Sharding | None = None
                  ) -> Iterator[dict]:
  """One shuffled epoch of full batches, from batch index ``start_batch`` on.

  Yields ``{field: [B, ...]}`` for every field of ``split`` (e.g. ``{'image': uint8
  [B, H, W, 3], 'label': int32 [B]}``), rows of one example aligned; the last
  ``N % batch_size`` examples of the epoch's order are dropped. A ``ShareSplits``
  (``fdjax.data.share_pools``) fills share i of each batch from its pool i. Raises ValueError
  (eagerly) if the split has fewer than ``batch_size`` examples or ``start_batch`` is
  outside ``[0, num_batches]``.
  """
  n = len(split)
  total = num_batches(n, batch_size, drop_remainder=True)
  if total == 0:
    raise ValueError(f"batch_size {batch_size} is larger than the split ({n} examples)")
  if not 0 <= start_batch <= total:
    raise ValueError(f"start_batch {start_batch} is outside [0, {total}] ({total} batches of "
                     f"{batch_size} in {n} examples)")
  if isinstance(split, ShareSplits):
    order = split.epoch_order(batch_size, seed=seed, epoch=epoch)
  else:
    order = epoch_order(n, seed=seed, epoch=epoch, shuffle=True)

  def generate():
    for b in range(start_batch, total):
      yield _put(split.fields, order[b * batch_size:(b + 1) * batch_size], sharding)

  return generate()


def eval_batches(split: ImageSet, batch_size: int, *, sharding: jax.sharding.Sharding | None = None
                 ) -> Iterator[dict]:
  """Every example once, in order, in batches of exactly ``batch_size``.

  Yields ``{field: [B, ...]}`` for every field of ``split`` plus ``'mask': bool [B]``
  (e.g. ``{'image': uint8 [B, H, W, 3], 'label': int32 [B], 'mask': bool [B]}``). The
  last batch pads every field with zeros (zero images, label 0) where ``mask`` is
  False, so shapes stay static (one compilation) and every batch divides over a mesh.
  Weight per-example metrics by ``mask``.
  """
  n = len(split)
  total = num_batches(n, batch_size, drop_remainder=False)

  def generate():
    for b in range(total):
      rows = np.arange(b * batch_size, (b + 1) * batch_size)
      yield _put(split.fields, rows, sharding, valid=rows < n)

  return generate()
