"""Orbax checkpoints of a ``TrainState`` plus a small JSON record, under ``<dir>/<step>/``.

Restoring checks the saved tree against the expected one first, so a checkpoint
written by another model or optimiser gives an ``IncompatibleCheckpointError``
that names the differing leaves; unreadable files give a ``CorruptCheckpointError``
naming the step directory. Neither ever falls back to training from scratch.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """Base class for checkpoint problems."""


class CorruptCheckpointError(CheckpointError):
  """The checkpoint's files exist but cannot be read."""


class IncompatibleCheckpointError(CheckpointError):
  """The checkpoint holds a different tree (model, optimiser or shapes) than expected."""


class Checkpointer:
  """Keeps the last ``max_to_keep`` checkpoints of one training run in ``directory``."""

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3):
    self.directory = os.path.abspath(os.fspath(directory))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()},
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, state, meta: dict[str, Any] | None = None) -> None:
    """Saves ``state`` at ``int(state.step)`` with a JSON-serialisable ``meta`` record."""
    step = int(jax.device_get(state.step))
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {})), force=True)
    self._manager.wait_until_finished()

  def restore(self, target, step: int | None = None) -> tuple[Any, dict]:
    """Restores ``(state, meta)`` into the structure, shapes and shardings of ``target``.

    ``step`` defaults to the latest. Raises ``CheckpointError`` subclasses on any problem.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    path = os.path.join(self.directory, str(step))
    try:
      saved = self._manager.item_metadata(step)["state"]
    except Exception as e:  # orbax raises assorted errors for unreadable metadata
      raise CorruptCheckpointError(f"cannot read checkpoint metadata at {path}: {e}") from e
    if saved is None:
      raise CorruptCheckpointError(f"checkpoint at {path} has no readable 'state' item")
    _check_compatible(saved, target, path)
    abstract = jax.tree.map(_abstract, target)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:
      raise CorruptCheckpointError(f"cannot restore checkpoint at {path}: {e}") from e
    return restored["state"], dict(restored["meta"] or {})

  def close(self) -> None:
    self._manager.close()


def _abstract(x):
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return x


def _check_compatible(saved, target, path: str) -> None:
  """Compares leaf paths and shapes of the saved metadata tree with ``target``."""
  def leaves(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {path_str(p): tuple(getattr(v, "shape", np.shape(v))) for p, v in flat}

  saved_leaves = leaves(_to_plain(saved))
  target_leaves = leaves(_to_plain(target))
  missing = sorted(set(target_leaves) - set(saved_leaves))
  extra = sorted(set(saved_leaves) - set(target_leaves))
  shapes = sorted(k for k in set(saved_leaves) & set(target_leaves)
                  if saved_leaves[k] != target_leaves[k])
  if missing or extra or shapes:
    detail = []
    if missing:
      detail.append(f"missing from checkpoint: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if extra:
      detail.append(f"not expected: {extra[:5]}{' ...' if len(extra) > 5 else ''}")
    if shapes:
      detail.append("shape differs: " + ", ".join(
          f"{k} saved {saved_leaves[k]} vs expected {target_leaves[k]}" for k in shapes[:5]))
    raise IncompatibleCheckpointError(
        f"checkpoint at {path} does not match this run's model/optimizer "
        f"({'; '.join(detail)}). Use a fresh --workdir or the same config that wrote it.")


def path_str(path) -> str:
  """'opt_state/1/0/trace/...' whatever the key kinds (dict keys, indices, attributes)."""
  parts = []
  for k in path:
    for attr in ("key", "idx", "name"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
  return "/".join(parts)


def _to_plain(tree):
  """Normalises flax structs / optax states and orbax metadata to nested dicts and lists."""
  from flax import serialization
  state_dict = serialization.to_state_dict(tree)
  return jax.tree.map(lambda x: x, state_dict, is_leaf=lambda x: hasattr(x, "shape"))
