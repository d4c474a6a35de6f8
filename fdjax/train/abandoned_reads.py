"""Quiets one known race of orbax + tensorstore after a checkpoint fails to restore.

orbax restores a checkpoint's arrays as tensorstore reads gathered in one
``asyncio.run``. When the data is damaged, the first failing read ends that run and
closes its event loop while the other reads are still in flight in tensorstore's
threads; each of them then completes into the closed loop, and Python prints
``Exception ignored in: None ... RuntimeError: Event loop is closed`` through
``sys.unraisablehook``, interleaved with fdjax's own message. Measured with orbax 0.12.8
(python 3.11.7): 30 restores of a damaged two-array checkpoint printed 39 such
tracebacks, and under pytest they surfaced as a ``PytestUnraisableExceptionWarning`` in
whatever test ran next on that worker. fdjax already reports the damage
(``CorruptCheckpointError``), so these tracebacks say nothing a person needs.

When the damage is inside the data (a flipped bit: tensorstore's checksum fails),
several reads fail, and the tasks whose failure nobody awaited any more are logged by
asyncio when they are collected: ``ERROR:asyncio:Task exception was never retrieved``
with tensorstore's ``DATA_LOSS`` traceback, once per array. A save that fails (a full
disk) does the same with each array's write (``RESOURCE_EXHAUSTED: Error writing ...
in OCDBT database``), and orbax logs each failed writer thread's traceback
(``_SignalingThread.run() raised an exception: ... in OCDBT database``): fdjax reports
that failure once, as one line (``fdjax.errors.environment_error``), so both are
dropped too, and the filters are also installed before each save.

``ignore_abandoned_reads()`` installs a filter in front of ``sys.unraisablehook``
(``fdjax.unraisable``, once in the chain) that drops exactly the first kind: a
``RuntimeError('Event loop is closed')`` raised inside asyncio's
``call_soon_threadsafe`` with no object attached.
Every other unraisable exception goes to the hook that was there before. It also adds
a filter to the ``asyncio`` logger that drops the second kind: a "... exception was
never retrieved" record whose exception is tensorstore's (its message holds the
``tensorstore_spec``); every other asyncio record passes. fdjax calls it before each
restore (a checkpoint's or a model's variables): the stragglers of a failed read can
arrive before the failure reaches fdjax's code, so installing the filter only then lets
some through (seen under load: 7 of them). A process that never restores anything keeps
Python's hook untouched.
"""

from __future__ import annotations

import logging as std_logging
import threading
import traceback

from absl import logging

from fdjax import unraisable

_LOCK = threading.Lock()
_dropped = 0


def is_abandoned_read(unraisable) -> bool:
  """True for the race above: ``RuntimeError('Event loop is closed')`` from asyncio's
  ``call_soon_threadsafe``, no object (``sys.UnraisableHookArgs``)."""
  exc = unraisable.exc_value
  if unraisable.object is not None or not isinstance(exc, RuntimeError):
    return False
  if str(exc) != "Event loop is closed" or exc.__traceback__ is None:
    return False
  return any(frame.name == "call_soon_threadsafe"
             for frame in traceback.extract_tb(exc.__traceback__))


def is_abandoned_task(record: std_logging.LogRecord) -> bool:
  """True for an asyncio record of a collected task or future whose exception, a failed
  tensorstore read, nobody retrieved."""
  message = str(record.msg)
  if not message.startswith(("Task exception was never retrieved",
                             "Future exception was never retrieved")):
    return False
  exc = record.exc_info[1] if record.exc_info else None
  return exc is not None and any(mark in str(exc) for mark in ("tensorstore_spec",
                                                               "in OCDBT database"))


def is_failed_writer(record: std_logging.LogRecord) -> bool:
  """True for orbax's record of a writer thread that a failed tensorstore write ended.
  The record's own format string is looked at first: formatting every record of absl's
  logger here would raise a bad format's error at its caller (logging reports it)."""
  if "_SignalingThread.run() raised an exception" not in str(record.msg):
    return False
  try:
    message = record.getMessage()
  except Exception:  # noqa: BLE001  (logging's own handler reports a bad format)
    return False
  return "_SignalingThread.run() raised an exception" in message and (
      "in OCDBT database" in message or "tensorstore_spec" in message)


class _AbandonedTaskFilter(std_logging.Filter):
  def filter(self, record: std_logging.LogRecord) -> bool:
    global _dropped
    if is_abandoned_task(record) or is_failed_writer(record):
      with _LOCK:
        _dropped += 1
      return False
    return True


def dropped() -> int:
  """How many such tracebacks this process has dropped."""
  return _dropped


def ignore_abandoned_reads() -> None:
  """Installs the filtering hook (``fdjax.unraisable.drop``: once in the hook chain) and
  the ``asyncio`` logger's filter, once."""
  with _LOCK:
    for logger in (std_logging.getLogger("asyncio"), logging.get_absl_logger()):
      if not any(isinstance(f, _AbandonedTaskFilter) for f in logger.filters):
        logger.addFilter(_AbandonedTaskFilter())
    unraisable.drop("abandoned_reads", is_abandoned_read, _count_dropped_read)


def _count_dropped_read(args) -> None:
  global _dropped
  _dropped += 1
  logging.debug("dropped an orbax/tensorstore read that completed after its failed "
                "restore (Event loop is closed); %d so far", _dropped)
