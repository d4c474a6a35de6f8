"""Saving and loading a model's ``{'params', 'batch_stats'}`` alone (no optimiser state).

Every finished stage writes its variables this way; orbax writes to a temporary
directory and renames it, so a directory that exists is complete. ``digest.json`` inside
it (written next) holds the variables' sha256 (``fdjax.train.integrity``), compared when
they are read: orbax reads flipped bits back as other numbers without an error. In a
multi-process run every process calls ``save_variables`` / ``load_variables`` (orbax
writes each array once, from the process holding it, and waits for all before the
rename).
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from fdjax.distributed import barrier, is_main_process
from fdjax.errors import UserError
from fdjax.json_files import read_json, write_json
from fdjax.train.abandoned_reads import ignore_abandoned_reads
from fdjax.train.checkpoint import (CheckpointReadError, CorruptCheckpointError, _check_compatible,
                                   check_outside_reason)
from fdjax.train.integrity import damaged, record

DIGEST_FILE = "digest.json"   # fdjax.train.integrity.record of the saved variables


class OrbaxVersionError(UserError):
  """The installed orbax-checkpoint reads checkpoints through an API fdjax does not know:
  the files are not in question (nothing to delete)."""


def save_variables(path: str, variables: dict) -> None:
  """Writes ``variables`` to ``path`` (a directory that must not exist yet)."""
  ignore_abandoned_reads()   # a failed write's stragglers (abandoned_reads' docstring)
  checkpointer = ocp.StandardCheckpointer()
  host = jax.tree.map(_host, variables)
  digest = record(host)   # first: a tree it cannot digest fails before anything is written
  try:
    checkpointer.save(os.path.abspath(path), host)
    checkpointer.wait_until_finished()
  finally:
    checkpointer.close()   # its background threads end here, not when collected
  if digest is not None and is_main_process():
    write_json(os.path.join(path, DIGEST_FILE), digest)
  barrier(f"fdjax save_variables {path}")  # then every process sees the stage as done


def _host(x):
  """A numpy copy of ``x``, except an array split over several processes (e.g. experts
  sharded over a multi-host mesh), which no one process can fetch: orbax writes its
  shards from where they lie."""
  if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
    return x
  return jax.device_get(x)


# orbax writes to a temporary folder and renames it, so damage came after the write.
_REWRITE = ("its files were damaged after they were written: delete {path} and run the "
            "study again with the same --workdir to write it anew")


def variables_exist(path: str) -> bool:
  return os.path.isdir(path)


def load_variables(path: str, target: dict | None = None) -> dict:
  """Reads variables from ``path``; with ``target`` checks structure and shapes first."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no saved variables at {path}")
  ignore_abandoned_reads()   # before reading: a failed read's stragglers come at once
  checkpointer = ocp.StandardCheckpointer()
  try:
    if target is not None:
      metadata = checkpointer.metadata(path)
      if not hasattr(metadata, "item_metadata"):   # the API, not the files: keep them
        raise OrbaxVersionError(f"orbax-checkpoint {ocp.__version__} reads a checkpoint's "
                                f"metadata in a way fdjax does not know (no item_metadata)",
                                hint="fdjax needs orbax-checkpoint >= 0.11.22 "
                                     "(pyproject.toml): pip install -U orbax-checkpoint")
      saved = metadata.item_metadata
      if saved is None:   # orbax logs a warning and returns None for unreadable metadata
        raise CorruptCheckpointError(f"cannot read variables at {path}: its metadata is "
                                     f"unreadable", hint=_REWRITE.format(path=path))
      _check_compatible(saved, target, path)
      abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), target)
      variables = checkpointer.restore(path, abstract)
    else:
      variables = checkpointer.restore(path)
    _check_digest(variables, path)
    return variables
  except (FileNotFoundError, CorruptCheckpointError, CheckpointReadError, OrbaxVersionError):
    raise
  except Exception as e:
    if type(e).__name__ == "IncompatibleCheckpointError":
      raise
    check_outside_reason(e, path)
    raise CorruptCheckpointError(f"cannot read variables at {path}: {e}",
                                 hint=_REWRITE.format(path=path)) from e
  finally:
    checkpointer.close()


def _check_digest(variables, path: str) -> None:
  """``CorruptCheckpointError`` when ``variables`` (as read) are not what was saved at
  ``path`` (its ``digest.json``; saves before 2026-12-07 have none: unchecked)."""
  digest_path = os.path.join(path, DIGEST_FILE)
  if not os.path.exists(digest_path):
    return
  recorded = read_json(digest_path, hint=_REWRITE.format(path=path))
  if not isinstance(recorded, dict) or damaged(variables, recorded):
    raise CorruptCheckpointError(f"the variables at {path} read back other values than were "
                                 f"saved (their sha256 differs)", hint=_REWRITE.format(path=path))
