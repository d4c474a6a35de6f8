"""Saving and loading a model's ``{'params', 'batch_stats'}`` alone (no optimiser state).

Every finished stage writes its variables this way; orbax writes to a temporary
directory and renames it, so a directory that exists is complete.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from fdjax.train.checkpoint import CorruptCheckpointError, _check_compatible


def save_variables(path: str, variables: dict) -> None:
  """Writes ``variables`` to ``path`` (a directory that must not exist yet)."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), jax.device_get(variables))
  checkpointer.wait_until_finished()


def variables_exist(path: str) -> bool:
  return os.path.isdir(path)


def load_variables(path: str, target: dict | None = None) -> dict:
  """Reads variables from ``path``; with ``target`` checks structure and shapes first."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no saved variables at {path}")
  checkpointer = ocp.StandardCheckpointer()
  try:
    if target is not None:
      _check_compatible(checkpointer.metadata(path).item_metadata, target, path)
      abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), target)
      return checkpointer.restore(path, abstract)
    return checkpointer.restore(path)
  except (FileNotFoundError, CorruptCheckpointError):
    raise
  except Exception as e:
    if type(e).__name__ == "IncompatibleCheckpointError":
      raise
    raise CorruptCheckpointError(f"cannot read variables at {path}: {e}") from e
