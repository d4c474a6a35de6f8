"""A damaged checkpoint gives fdjax's one error, not tensorstore's late tracebacks
(fdjax.train.abandoned_reads)."""

import asyncio
import gc
import glob
import logging
import os
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdjax.train import Checkpointer, CorruptCheckpointError, create_train_state, make_mesh
from fdjax.train import abandoned_reads
from fdjax.train.variables_io import load_variables, save_variables


def _closed_loop_error() -> RuntimeError:
  loop = asyncio.new_event_loop()
  loop.close()
  try:
    loop.call_soon_threadsafe(print)
  except RuntimeError as e:
    return e
  raise AssertionError("a closed loop accepted a callback")


def _args(exc, obj=None):
  """What Python passes to ``sys.unraisablehook`` (``sys.UnraisableHookArgs``'s fields)."""
  return types.SimpleNamespace(exc_type=type(exc), exc_value=exc,
                               exc_traceback=exc.__traceback__, err_msg=None, object=obj)


def test_only_a_closed_loops_callback_is_recognised():
  assert abandoned_reads.is_abandoned_read(_args(_closed_loop_error()))
  try:
    raise RuntimeError("Event loop is closed")     # the same words, raised elsewhere
  except RuntimeError as e:
    assert not abandoned_reads.is_abandoned_read(_args(e))
  assert not abandoned_reads.is_abandoned_read(_args(_closed_loop_error(), obj=object()))
  try:
    raise ValueError("Event loop is closed")
  except ValueError as e:
    assert not abandoned_reads.is_abandoned_read(_args(e))


def test_the_hook_drops_those_and_passes_everything_else_on(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  abandoned_reads.ignore_abandoned_reads()
  abandoned_reads.ignore_abandoned_reads()      # once: not wrapped twice
  # Stragglers of a damaged restore in an earlier test of this worker would also be
  # counted: let them land first (the suite once counted 2 here).
  _settle(seen)
  seen.clear()
  before = abandoned_reads.dropped()
  sys.unraisablehook(_args(_closed_loop_error()))
  other = _args(ValueError("a finaliser failed"))
  sys.unraisablehook(other)
  assert seen == [other]
  assert abandoned_reads.dropped() == before + 1


def _damage_data(directory) -> None:
  targets = [p for p in glob.glob(os.path.join(directory, "**", "d", "*"), recursive=True)
             if os.path.isfile(p)]
  assert targets
  for path in targets:
    with open(path, "wb") as f:
      f.write(b"\x00garbage\xff" * 3)


def _settle(seen) -> list:
  """Lets reads still in flight finish, then the late tracebacks among ``seen``. Two
  collections, not one per wait: in a suite worker full of compiled programs each full
  collection takes a quarter of a second or more."""
  time.sleep(1.0)
  gc.collect()
  time.sleep(0.1)
  gc.collect()
  return [u for u in seen if "Event loop is closed" in str(u.exc_value)]


def test_restoring_damaged_checkpoints_prints_no_late_tracebacks(tmp_path, monkeypatch):
  # Before fdjax filtered them, 30 such restores printed 39 'Event loop is closed'
  # tracebacks: reads that orbax left in flight when the first one failed.
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  mesh = make_mesh()
  params = {f"w{i}": jnp.full((64,), float(i)) for i in range(6)}
  state = create_train_state({"params": params, "batch_stats": {}}, optax.sgd(0.1),
                             jax.random.PRNGKey(0), mesh)
  host = {"params": {k: np.asarray(v) for k, v in params.items()}}
  for attempt in range(4):
    _restore_damaged(tmp_path / f"c{attempt}", state, _damage_data)
    save_variables(str(tmp_path / f"v{attempt}"), host)
    _damage_data(str(tmp_path / f"v{attempt}"))
    with pytest.raises(CorruptCheckpointError, match="cannot read variables") as error:
      load_variables(str(tmp_path / f"v{attempt}"), host)
    assert f"delete {tmp_path / f'v{attempt}'} and run the study again" in error.value.hint
  assert _settle(seen) == []


def _restore_damaged(directory, state, damage) -> None:
  """Saves ``state`` at step 0 in ``directory``, ``damage``s its data files, and checks
  that restoring it raises fdjax's one error."""
  saved = Checkpointer(directory)
  saved.save(state)
  saved.close()
  damage(str(directory / "0"))
  checkpointer = Checkpointer(directory)
  with pytest.raises(CorruptCheckpointError, match="cannot (read|restore) checkpoint"):
    checkpointer.restore(state)
  checkpointer.close()


def _flip_bits(directory) -> None:
  """Inverts 8 bytes in the middle of every data file: the files stay whole, and
  tensorstore's checksums fail (a disk's or a copy's damage, not a truncation)."""
  for path in glob.glob(os.path.join(directory, "**", "d", "*"), recursive=True):
    data = bytearray(open(path, "rb").read())
    if len(data) > 200:
      for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
      open(path, "wb").write(bytes(data))


def test_flipped_bits_give_one_error_and_no_asyncio_tracebacks(tmp_path, caplog):
  """Several reads fail there; asyncio logged each unretrieved one when collected."""
  mesh = make_mesh()
  params = {f"w{i}": jnp.arange(1000.0) + i for i in range(4)}
  state = create_train_state({"params": params, "batch_stats": {}}, optax.adam(0.1),
                             jax.random.PRNGKey(0), mesh)
  caplog.set_level(logging.ERROR, logger="asyncio")
  for attempt in range(3):
    _restore_damaged(tmp_path / f"c{attempt}", state, _flip_bits)
  _settle([])
  assert [r.getMessage()[:60] for r in caplog.records if r.name == "asyncio"] == []
  # Any other asyncio record passes the filter.
  logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=(
      ValueError, ValueError("a coroutine of the caller failed"), None))
  assert [r.name for r in caplog.records] == ["asyncio"]


def test_a_failed_save_s_stragglers_are_dropped_and_nothing_else():
  """A full disk during a checkpoint save printed some 450 lines: asyncio's "Task
  exception was never retrieved" per array and orbax's writer-thread tracebacks, each
  holding tensorstore's OCDBT write error. fdjax reports that error once, in one line."""
  write = ValueError('RESOURCE_EXHAUSTED: Error writing "params.w/0" in OCDBT database at '
                     "local file \"/w/8.orbax-checkpoint-tmp/\": No space left on device")

  def record(name, message, exc=None):
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, None,
                             (type(exc), exc, None) if exc else None)

  assert abandoned_reads.is_abandoned_task(record("asyncio", "Task exception was never "
                                                  "retrieved", write))
  assert abandoned_reads.is_failed_writer(record(
      "absl", f"[process=0] _SignalingThread.run() raised an exception: {write}"))
  # a record whose format does not fit its arguments: left to logging's own report (the
  # filter formatted it and raised at the caller)
  bad = logging.LogRecord("absl", logging.INFO, __file__, 1, "step %d", ("x",), None)
  assert not abandoned_reads.is_failed_writer(bad)
  for other in (record("asyncio", "Task exception was never retrieved", ValueError("x")),
                record("absl", "_SignalingThread.run() raised an exception: OOM"),
                record("absl", f"step 8 saved ({write})")):
    assert not (abandoned_reads.is_abandoned_task(other) or abandoned_reads.is_failed_writer(other))
