"""Digests of saved trees: damage that orbax reads back without an error is caught.

orbax (tensorstore, zarr chunks compressed in OCDBT files) keeps no checksum of the
chunk data: bytes flipped inside a data file of a saved model decode to other numbers,
NaN among them, and load without any error (measured, BUILD_NOTES.md 2026-12-07 midday:
of 20,000 float32 values saved, one byte in 997 of the data file XORed, orbax read back
16,073 changed, 55 of them NaN, without an exception). fdjax records the sha256 of
every leaf's dtype, shape and bytes when it saves (a training checkpoint's ``meta``, a
stage's ``variables/digest.json``) and compares it after reading.

A tree holding an array split over several processes (experts sharded over a
multi-host mesh), which no one process can read whole, has no digest (``None``): it
is saved and loaded unchecked.
"""

from __future__ import annotations

import hashlib

import jax
import numpy as np


def tree_digest(tree) -> str | None:
  """sha256 (64 hex digits) of every leaf's ``(dtype, shape)`` and bytes in tree order;
  typed PRNG keys by their key data. None when a leaf lies over several processes."""
  h = hashlib.sha256()
  for array in _host_leaves(tree):
    if array is None:
      return None
    h.update(str((array.dtype, array.shape)).encode())
    h.update(np.ascontiguousarray(array).tobytes())
  return h.hexdigest()


def record(tree) -> dict | None:
  """What to save beside ``tree``: ``{'sha256': tree_digest, 'layout': sha256 of the
  leaves' (dtype, shape) alone}``; None when the tree has no digest."""
  digest = tree_digest(tree)
  return None if digest is None else {"sha256": digest, "layout": _layout(tree)}


def damaged(tree, recorded) -> bool:
  """True when ``tree`` (as read back) is not the tree ``recorded`` (``record``) was made
  of. False when nothing was recorded (saves before 2026-12-07), when the tree has no
  digest, or when the leaves were read into other dtypes (a cast: not comparable)."""
  if not isinstance(recorded, dict) or "sha256" not in recorded:
    return False
  if recorded.get("layout") != _layout(tree):
    return False
  digest = tree_digest(tree)
  return digest is not None and digest != recorded["sha256"]


def _dtype(x) -> str:
  """A leaf's dtype: 'key' for a typed PRNG key; a Python number's as numpy reads it."""
  if _is_key(x):
    return "key"
  return str(np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype)


def _layout(tree) -> str:
  leaves = [(_dtype(x), tuple(np.shape(x))) for x in jax.tree.leaves(tree)]
  return hashlib.sha256(str(leaves).encode()).hexdigest()


def _is_key(x) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _host_leaves(tree):
  """Each leaf as a numpy array (None for one split over several processes)."""
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array):
      if not (leaf.is_fully_addressable or leaf.is_fully_replicated):
        yield None
        return
      if _is_key(leaf):
        leaf = jax.random.key_data(leaf)
    yield np.asarray(jax.device_get(leaf))
