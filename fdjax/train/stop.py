"""Stopping a run on request without losing its work: SIGTERM, Ctrl-C, a hang-up, a time limit.

A preemptible or spot VM, a Cloud TPU maintenance event, Slurm at the end of a job's
time and ``timeout`` all ask a process to stop with SIGTERM, seconds before they kill
it; a person at a terminal presses Ctrl-C (SIGINT); a terminal that closes, or an ssh
connection that drops, hangs up the processes it ran (SIGHUP). Without a handler the
process dies at once and loses every step since its last periodic checkpoint
(``checkpoint.every_steps``). With ``armed()`` (``fdjax.main`` arms it for the whole
run), each of these signals is a stop request:

* during training, the request is noted and ``fit`` (``fdjax.train.loop``), which asks
  ``poll()`` after every step, saves a checkpoint of the step it has reached (after the
  epoch's hook when the step ends an epoch) and raises ``RunStopped``;
* outside training (loading data, evaluating, writing reports), ``RunStopped`` is
  raised at once: finished stages, cached evaluations and checkpoints are already on
  disk;
* a second signal acts as it did before arming (SIGTERM kills, Ctrl-C raises
  ``KeyboardInterrupt``), unless it comes within ``SAME_SIGNAL_S`` of the first: one
  Ctrl-C can arrive twice (the terminal's, and ``timeout --foreground`` forwarding it:
  ``launch/gpu_sweep.sh``), and the copy is the same request, not "stop at once";
* a hang-up's own copies never stop at once (the kernel and the shell each send one, at
  no set interval, and nobody is left at the terminal to ask twice); it counts as the
  first signal for a SIGTERM or Ctrl-C after it (a supervisor's SIGTERM a second later
  still kills; one that comes with it, as a closing session sends both, is the same
  request). It also sends the rest of the console to ``/dev/null`` where it went to the
  terminal or a pipe (the terminal, or a ``tee`` in it, is gone: writing there fails);
  a console redirected to a file goes on. A process started under ``nohup`` (SIGHUP
  ignored) keeps ignoring it.

``fdjax.main`` prints where the run stopped and exits with ``EXIT_STOPPED`` (75,
``EX_TEMPFAIL``: try again); the same command resumes from that checkpoint, with the
batches and results of an uninterrupted run (resume is exact: ``fdjax.train.loop``).

``time_limit_s`` (``fdjax.main --time_limit=50m``) is the same request made by the run
itself once that many seconds have passed since ``armed()``; it is checked after each
training step (a run that is evaluating when it passes stops at its next step).

Several processes (``fdjax.distributed``) must stop at the same step, or the collective
checkpoint would wait forever. There JAX's own preemption service (on by default:
``jax_enable_preemption_service``) catches SIGTERM on any process, tells the others and
agrees on a step ``multihost_utils.reached_preemption_sync_point`` names, about a
second later; ``poll()`` asks it after every step with a count of this process's steps
over all stages (the same count on every process: they run the same program). No
SIGTERM handler is installed there (it would replace JAX's), so SIGTERM outside training
waits for the next step; Ctrl-C (where SIGINT is not ignored: ``launch/local.sh``'s
foreground process 0) and a hang-up (where SIGHUP is not ignored) become that process's
SIGTERM; and the time limit is process 0's clock: when it passes, process 0 sends
itself SIGTERM.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from typing import Iterator

import jax
from absl import logging

from fdjax import console, early_stop, unraisable
from fdjax.console import write_stderr
from fdjax.early_stop import SAME_SIGNAL_S   # a second signal this soon: the same request

EXIT_STOPPED = 75   # sysexits.h EX_TEMPFAIL: a temporary failure, the same command can retry


class RunStopped(BaseException):
  """The run stopped on request (a signal or its time limit); the same command resumes it.

  A ``BaseException``, as ``KeyboardInterrupt``: outside training the signal handler
  raises it wherever the program is, and code that handles ``Exception`` (a checkpoint
  read that reports any failure as a damaged file) must let it through.

  ``reason``: ``'SIGTERM'``, ``'Ctrl-C'``, ``'hang-up'`` or ``'time limit'``
  (``'preemption notice'`` on a process of a multi-process run that did not receive the
  signal itself);
  ``stage`` and ``step``: the training stage and the step of its checkpoint, or None
  outside training."""

  def __init__(self, reason: str, stage: str | None = None, step: int | None = None,
               checkpoint: str | None = None):
    where = (f"in stage {stage} at step {step}, checkpoint saved in {checkpoint}"
             if stage is not None else "outside training; finished stages are kept")
    super().__init__(f"stopped on {reason} {where}")
    self.reason, self.stage, self.step, self.checkpoint = reason, stage, step, checkpoint


class _Stop:
  """The process's one stop request (module docstring); ``STOP`` is the instance."""

  def __init__(self):
    self._armed = False
    self._reason: str | None = None
    self._deadline: float | None = None
    self._steps = 0            # training steps of this process, all stages (multi-process)
    self._training = 0         # depth of fit() calls in progress
    self._previous = None      # {signal: its handler before arming} (one process)
    self._first_signal = None  # monotonic time of the first signal since arming
    self._multi = False
    self._agreed = False       # multi-process: every process has reached the agreed step
    self._hangup_seen = False  # a hang-up came since arming (its copies are ignored)

  SIGNALS = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C", signal.SIGHUP: "hang-up"}

  @property
  def reason(self) -> str | None:
    """Why a stop was requested, once it has been; None before."""
    return self._reason

  def arm(self, time_limit_s: float | None = None) -> None:
    self.disarm()
    self._armed, self._reason, self._steps, self._agreed = True, None, 0, False
    self._first_signal, self._hangup_seen = None, False
    self._multi = jax.process_count() > 1
    self._deadline = None if time_limit_s is None else time.monotonic() + float(time_limit_s)
    early_stop.uninstall()   # the handler restored after a first signal is Python's own
    nohup = signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    if not self._multi:
      self._previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS
                        if not (s == signal.SIGHUP and nohup)}
      _quiet_lost_stops()
    else:
      forwarded = [s for s in (signal.SIGINT, signal.SIGHUP)
                   if signal.getsignal(s) is not signal.SIG_IGN]
      self._previous = {s: signal.signal(s, self._forward) for s in forwarded}
    if early_stop.take():   # a Ctrl-C while the program loaded
      self._first_signal = time.monotonic()
      if self._multi:
        os.kill(os.getpid(), signal.SIGTERM)   # every process stops at one step
      else:
        self._reason = "Ctrl-C"

  def disarm(self) -> None:
    self._restore_handlers()
    self._armed, self._deadline = False, None

  def _restore_handlers(self) -> None:
    for number, handler in (self._previous or {}).items():
      signal.signal(number, handler)
    self._previous = None

  def _again(self, signum) -> bool:
    """False for the first signal since arming (the caller handles it). For a later one,
    True (the caller does nothing more): within ``SAME_SIGNAL_S`` of the first it is a
    copy of it and ignored; after that the previous handlers come back and the signal is
    raised again under them (it acts at once, as before arming)."""
    now = time.monotonic()
    if self._first_signal is None:
      self._first_signal = now
      return False
    if now - self._first_signal < SAME_SIGNAL_S:
      return True
    self._restore_handlers()
    signal.raise_signal(signum)
    return True

  def _on_signal(self, signum, frame) -> None:
    if signum == signal.SIGHUP:
      hung_up = self._hung_up()
      if hung_up or self._reason is not None:   # a copy, or a stop already requested
        return
    elif self._again(signum):
      return
    self._reason = self._reason or self.SIGNALS.get(signum, f"signal {signum}")
    if not self._training:
      raise RunStopped(self._reason)
    again = "" if signum == signal.SIGHUP else " (again to stop at once)"
    write_stderr(f"{self._reason}: saving the step in training, then stopping{again}\n")

  def _forward(self, signum, frame) -> None:
    """Several processes: Ctrl-C or a hang-up becomes this process's SIGTERM, which JAX's
    preemption service turns into one agreed step for all of them (module docstring)."""
    if signum == signal.SIGHUP:
      if self._hung_up():
        return
      write_stderr("hang-up: every process saves the same step, then stops\n")
    else:
      if self._again(signum):
        return
      write_stderr("Ctrl-C: every process saves the same step, then stops (again to stop "
                   "at once)\n")
    os.kill(os.getpid(), signal.SIGTERM)

  def _hung_up(self) -> bool:
    """True when a hang-up came before (this one is a copy). Else notes it and sends the
    console to ``/dev/null`` where it went to the terminal or a pipe (module docstring)."""
    if self._hangup_seen:
      return True
    self._hangup_seen = True
    if self._first_signal is None:   # a SIGTERM or Ctrl-C a second later: the second signal
      self._first_signal = time.monotonic()
    console.silence_console()
    return False

  def check(self) -> None:
    """Raises ``RunStopped`` when a stop was requested outside training but the run went
    on: the handler's raise was lost (Python ran a garbage-collection callback, e.g.
    JAX's, when the signal came, and such callbacks ignore exceptions), or the request
    came before arming. Called where a run moves on: a stage's start, an evaluation's."""
    if self._armed and not self._multi and self._reason is not None and not self._training:
      raise RunStopped(self._reason)

  @contextlib.contextmanager
  def training(self) -> Iterator[None]:
    """Marks a ``fit`` in progress: a SIGTERM is noted for ``poll`` instead of raising."""
    self._training += 1
    try:
      yield
    finally:
      self._training -= 1

  def poll(self) -> str | None:
    """Called by ``fit`` after every training step: the reason to stop now, else None.
    Once it returns a reason it returns it on every later call."""
    if not self._armed:
      return None
    self._steps += 1
    if self._deadline is not None and time.monotonic() >= self._deadline:
      self._deadline = None
      if not self._multi:
        self._reason = self._reason or "time limit"
      elif jax.process_index() == 0:
        self._reason = "time limit"
        os.kill(os.getpid(), signal.SIGTERM)   # JAX's preemption service takes it from here
    if not self._multi:
      return self._reason
    if not self._agreed and _reached_sync_point(self._steps):
      self._agreed = True
    return (self._reason or "preemption notice") if self._agreed else None


def _quiet_lost_stops() -> None:
  """A ``RunStopped`` raised while Python ran a garbage-collection callback (JAX's) is
  lost, and Python prints it as "Exception ignored in: <function _xla_gc_callback>" with
  its traceback; ``_Stop.check`` raises it again where the run moves on, so that print
  is dropped (``fdjax.unraisable``; every other unraisable exception goes on)."""
  unraisable.drop("lost_stop", lambda args: isinstance(args.exc_value, RunStopped),
                  lambda args: logging.debug(
                      "a stop raised in a callback was lost (%s); raised again at the "
                      "run's next stage or evaluation", args.exc_value))


def _reached_sync_point(step: int) -> bool:
  from jax.experimental import multihost_utils
  try:
    return multihost_utils.reached_preemption_sync_point(step)
  except RuntimeError as e:   # jax_enable_preemption_service turned off
    if not _reached_sync_point.warned:
      logging.warning("this multi-process run cannot agree on a step to stop at (%s): "
                      "--time_limit does nothing, and SIGTERM kills it, losing the steps "
                      "since its last periodic checkpoint", e)
      _reached_sync_point.warned = True
    return False


_reached_sync_point.warned = False


STOP = _Stop()


@contextlib.contextmanager
def armed(time_limit_s: float | None = None) -> Iterator[_Stop]:
  """Arms ``STOP`` for the block (SIGTERM handler, time limit) and disarms it after."""
  STOP.arm(time_limit_s)
  try:
    STOP.check()   # a Ctrl-C while the program loaded (fdjax.early_stop)
    yield STOP
  finally:
    STOP.disarm()


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
  """``'90s'``, ``'50m'``, ``'1.5h'`` -> seconds. Raises ``ValueError`` for anything else
  (a bare number is refused: minutes and seconds are both common)."""
  match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh])\s*", str(text))
  if not match:
    raise ValueError(f"a duration is a number and a unit s, m or h (e.g. 90s, 50m, 1.5h), "
                     f"got {text!r}")
  return float(match.group(1)) * _UNITS[match.group(2)]
