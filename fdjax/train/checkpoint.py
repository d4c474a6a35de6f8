"""Orbax checkpoints of a ``TrainState`` plus a small JSON record, under ``<dir>/<step>/``.

Restoring checks the saved tree against the expected one first, so a checkpoint
written by another model or optimiser gives an ``IncompatibleCheckpointError``
that names the differing leaves; unreadable files, or files that read back other values
than were saved (the state's sha256, recorded in the meta record, differs:
``fdjax.train.integrity``), give a ``CorruptCheckpointError`` naming the step directory
(and the reads orbax leaves in flight then are kept off the console:
``fdjax.train.abandoned_reads``). Neither ever falls back to training from scratch.

When the newest checkpoint is corrupt, ``Checkpointer(on_corrupt=...)`` decides:

* ``'error'`` (default): ``CorruptCheckpointError`` whose message also names the
  newest intact older step (each older step is test-restored, newest first) and the
  option ``--config.checkpoint.on_corrupt=previous``, or says that there is none;
* ``'previous'``: one warning line naming the skipped step(s), then the newest intact
  older step is restored. The corrupt newer step folders are moved, not deleted, to
  ``<directory>.corrupt/<step>`` so that training can write those steps again. With no
  intact older step this also raises ``CorruptCheckpointError``.

A read that fails for a reason outside the files (too many open files, out of memory,
permission denied, an interrupted or timed-out call, a stale network handle) is not
damage: it raises ``CheckpointReadError``, which names the reason, never falls back and
never moves a step folder aside (``outside_reason``).

All three error classes are ``fdjax.errors.UserError``: the command line prints them as
one line. Restoring an explicitly requested ``step`` never falls back.

Multi-process runs: every process calls ``save`` and ``restore`` (orbax writes each
array's shards from the process that holds them, the JSON record from process 0, and
synchronises the processes); the corrupt-step folders are moved by process 0 only,
after which every process re-reads the directory.
"""

from __future__ import annotations

import errno
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from fdjax.distributed import barrier, is_main_process
from fdjax.errors import ConfigError, UserError, chained
from fdjax.train.abandoned_reads import ignore_abandoned_reads
from fdjax.train.integrity import damaged, record

ON_CORRUPT = ("error", "previous")
DIGEST_KEY = "fdjax_sha256"   # the state's digest in the meta record (fdjax.train.integrity)
ON_CORRUPT_FLAG = "--config.checkpoint.on_corrupt=previous"

class CheckpointError(RuntimeError):
  """Base class for checkpoint problems."""


class CorruptCheckpointError(UserError, CheckpointError):
  """The checkpoint's files exist but cannot be read."""


class IncompatibleCheckpointError(UserError, CheckpointError):
  """The checkpoint holds a different tree (model, optimiser or shapes) than expected."""


class CheckpointReadError(UserError, CheckpointError):
  """The checkpoint's files could not be read for a reason outside them (``outside_reason``):
  the files may well be intact, so nothing falls back, moves or should be deleted."""


# errno values of a read that failed because of the process or the system, not the file
_OUTSIDE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EACCES, errno.EPERM,
                   errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.ESTALE)


def outside_reason(exc: BaseException) -> str | None:
  """Why reading failed if the cause lies outside the files (``'Too many open files'``),
  else None: an ``OSError`` with one of ``_OUTSIDE_ERRNOS`` or a ``MemoryError`` anywhere
  in ``exc``'s chain (``fdjax.errors.chained``), or, for the libraries that re-raise such
  an error as text (tensorstore), its ``strerror`` in a message."""
  # strerror as tensorstore words it; XLA's "RESOURCE_EXHAUSTED: Out of memory while
  # trying to allocate ..." (an accelerator's memory, restoring onto it)
  texts = [os.strerror(code) for code in _OUTSIDE_ERRNOS] + ["Out of memory"]
  for e in chained(exc):
    if isinstance(e, MemoryError):
      return "out of memory"
    if isinstance(e, OSError) and e.errno in _OUTSIDE_ERRNOS:
      return os.strerror(e.errno)
    found = next((text for text in texts if text in str(e)), None)
    if found:
      return found
  return None


def check_outside_reason(exc: BaseException, path: str) -> None:
  """Raises ``CheckpointReadError`` when reading ``path`` failed for an ``outside_reason``:
  found in ``exc``, or, as orbax logs some ``OSError``s and raises a bare "Unknown key"
  instead, by opening every file under ``path`` once more."""
  reason = outside_reason(exc) or outside_reason(_open_every_file(path))
  if reason:
    raise CheckpointReadError(
        f"cannot read {path}: {reason}. This is not damage: the files were left as they are",
        hint="fix the cause (e.g. raise the open-file limit with `ulimit -n`, free memory, "
             "restore the permissions) and run the same command again") from exc


def _open_every_file(path: str) -> OSError | None:
  """The first ``OSError`` of listing ``path`` and opening each file under it, or None."""
  def fail(error):
    raise error
  try:
    for root, _, names in os.walk(path, onerror=fail):
      for name in names:
        os.close(os.open(os.path.join(root, name), os.O_RDONLY))
  except OSError as e:
    return e
  return None


class Checkpointer:
  """Keeps the last ``max_to_keep`` checkpoints of one training run in ``directory``.

  ``on_corrupt``: what ``restore()`` of the latest step does when that checkpoint is
  corrupt, ``'error'`` or ``'previous'`` (see the module docstring).
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3,
               on_corrupt: str = "error"):
    if on_corrupt not in ON_CORRUPT:
      raise ConfigError(f"checkpoint.on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
    self.on_corrupt = on_corrupt
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
    ignore_abandoned_reads()   # a failed write's stragglers (abandoned_reads' docstring)
    meta = dict(meta or {})
    digest = record(state)   # checked by restore: orbax reads flipped bits silently
    if digest is not None:
      meta[DIGEST_KEY] = digest
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, target, step: int | None = None) -> tuple[Any, dict]:
    """Restores ``(state, meta)`` into the structure, shapes and shardings of ``target``.

    ``step`` defaults to the latest; a corrupt latest step is handled as ``on_corrupt``
    says. Raises ``CheckpointError`` subclasses on any problem.
    """
    if step is not None:
      return self._restore_step(target, step)
    latest = self.latest_step()
    if latest is None:
      raise CheckpointError(f"no checkpoint in {self.directory}")
    try:
      return self._restore_step(target, latest)
    except CorruptCheckpointError as newest_error:
      corrupt, fallback = [latest], None
      for older in sorted((s for s in self.all_steps() if s < latest), reverse=True):
        try:
          fallback = older, self._restore_step(target, older)
          break
        except CorruptCheckpointError:
          corrupt.append(older)
      if self.on_corrupt == "previous" and fallback is not None:
        return self._fall_back(corrupt, *fallback)
      raise self._corrupt_error(newest_error, corrupt, fallback and fallback[0]) from newest_error

  def _corrupt_error(self, error: CorruptCheckpointError, corrupt: list[int],
                     intact: int | None) -> CorruptCheckpointError:
    """``error`` with where to go from here: the newest intact step, or that there is none."""
    also = (f" (older corrupt steps: {', '.join(map(str, corrupt[1:]))})" if corrupt[1:] else "")
    if intact is None:
      return CorruptCheckpointError(
          f"{error}; there is no older intact checkpoint in {self.directory}{also}: delete "
          f"that folder to train this stage again from its start, or use a new --workdir")
    return CorruptCheckpointError(
        f"{error}; the newest intact checkpoint is step {intact} "
        f"({os.path.join(self.directory, str(intact))}){also}: pass {ON_CORRUPT_FLAG} to "
        f"resume from it")

  def _fall_back(self, corrupt: list[int], step: int, restored):
    """Moves the ``corrupt`` step folders aside and returns ``restored`` (of ``step``)."""
    aside = self.directory + ".corrupt"
    if is_main_process():
      os.makedirs(aside, exist_ok=True)
      for bad in corrupt:
        dest = os.path.join(aside, str(bad))
        if os.path.exists(dest):  # left by an earlier fallback: the newer copy wins
          shutil.rmtree(dest)
        shutil.move(os.path.join(self.directory, str(bad)), dest)
    barrier(f"fdjax checkpoint fallback {self.directory}")
    self._manager.reload()
    logging.warning("corrupt checkpoint step%s %s in %s skipped (moved to %s); restoring the "
                    "newest intact step %d instead (checkpoint.on_corrupt=previous)",
                    "s" if len(corrupt) > 1 else "", ", ".join(map(str, corrupt)),
                    self.directory, aside, step)
    return restored

  def _restore_step(self, target, step: int) -> tuple[Any, dict]:
    path = os.path.join(self.directory, str(step))
    ignore_abandoned_reads()   # before reading: a failed read's stragglers come at once
    try:
      saved = self._manager.item_metadata(step)["state"]
    except Exception as e:  # orbax raises assorted errors for unreadable metadata
      check_outside_reason(e, path)
      raise CorruptCheckpointError(f"cannot read checkpoint metadata at {path}: {e}") from e
    if saved is None:
      raise CorruptCheckpointError(f"checkpoint at {path} has no readable 'state' item")
    _check_compatible(saved, target, path)
    abstract = jax.tree.map(_abstract, target)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as e:
      check_outside_reason(e, path)
      raise CorruptCheckpointError(f"cannot restore checkpoint at {path}: {e}") from e
    meta = dict(restored["meta"] or {})
    if damaged(restored["state"], meta.pop(DIGEST_KEY, None)):
      raise CorruptCheckpointError(f"checkpoint at {path} reads back other values than were "
                                   f"saved (its sha256 differs): its files were damaged")
    return restored["state"], meta

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
