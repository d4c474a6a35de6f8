"""Progress lines, a study-level progress / ETA, an evaluation's progress, and a JSON-lines
metrics file."""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Sequence

import numpy as np
from absl import logging

from fdjax.json_files import replaced


class MetricsWriter:
  """Appends one JSON object per line to ``path`` (created with its folder).

  Scalars are written as numbers, vectors / arrays as (nested) lists of numbers.
  """

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

  def write(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps({k: _plain(v) for k, v in record.items()}) + "\n")

  def drop_after(self, step: int) -> None:
    """Rewrites the file without the records of steps after ``step`` (and a line a
    crash left unfinished): a run resumed from the checkpoint of ``step`` writes those
    steps again, once."""
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = f.readlines()
    kept = []
    for line in lines:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if not (isinstance(record, dict) and isinstance(record.get("step"), (int, float))
              and record["step"] > step):
        kept.append(line if line.endswith("\n") else line + "\n")
    if kept != lines:
      with replaced(self.path) as f:
        f.writelines(kept)


def _plain(v):
  if isinstance(v, (str, int, bool)) or v is None:
    return v
  if isinstance(v, (list, tuple)) or np.ndim(v) > 0:
    try:
      return np.asarray(v, np.float64).tolist()
    except (TypeError, ValueError):
      return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else str(v)
  try:
    return float(v)
  except (TypeError, ValueError):
    return str(v)


def _number(v) -> tuple[float, str]:
  """``(value, note)``: a scalar as is; a vector's mean with note ``' (mean of P)'``."""
  if np.ndim(v) == 0:
    return float(v), ""
  return float(np.mean(v)), f" (mean of {np.size(v)})"


class Progress:
  """Logs ``step/total, loss, lr, images/s, ETA`` lines; throughput over the last interval.

  A vector loss (e.g. ``[P]``, a population) is shown as its mean, marked ``(mean of P)``;
  so are vector metrics. ``study`` (a ``StudyProgress.describe()`` line) is appended.
  """

  def __init__(self, name: str, total_steps: int, batch_size: int, start_step: int = 0):
    self.name, self.total, self.batch_size = name, total_steps, batch_size
    self._last_step, self._last_time = start_step, time.perf_counter()

  def restart(self, step: int) -> None:
    """Measures the next interval from ``step``, now (after a compiling first step)."""
    self._last_step, self._last_time = step, time.perf_counter()

  def line(self, step: int, metrics: dict, lr: float, study: str = "") -> dict:
    now = time.perf_counter()
    steps = max(step - self._last_step, 1)
    seconds = max(now - self._last_time, 1e-9)
    images_per_s = steps * self.batch_size / seconds
    eta_s = (self.total - step) * seconds / steps
    self._last_step, self._last_time = step, now
    extras = " ".join("{}={:.4g}{}".format(k, *_number(v)) for k, v in metrics.items()
                      if k not in ("loss", "finite"))
    loss, note = _number(metrics["loss"])
    logging.info("[%s] step %d/%d loss %.4f%s lr %.3g %.0f img/s ETA %s %s%s", self.name, step,
                 self.total, loss, note, lr, images_per_s, _hms(eta_s), extras,
                 f" | {study}" if study else "")
    return {"images_per_s": images_per_s, "eta_s": eta_s}


def _hms(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _duration(seconds: float) -> str:
  """``45s``, ``2m10s``, ``1h02m``."""
  seconds = int(round(seconds))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class StudyProgress:
  """Where a whole study (every stage of every method, in run order) stands, with an ETA.

  ``stages``: ``(name, work)`` pairs in run order; ``work`` = training images the stage
  will process (``epochs * steps_per_epoch * batch_size``; 0 for stages that do not
  train). ``start(name)`` when a stage begins running, ``advance(name, done)`` with the
  images processed so far in it, ``finish(name)`` when it is complete. ``finish``
  removes the stage's work from what remains; a stage never started, or started but
  with nothing advanced (reused from disk), adds no measured work.

  ETA = remaining work x (seconds since the first stage started in THIS process / work
  done in this process; the start-up before it, once only, stays out): the evaluations
  between stages, compilations and data loading are in the rate, spread over the
  training work as they recur with it (a rate of training time alone read 3 to 5 times
  too short for the quickstarts, whose evaluations take about 40% of the time);
  ``ETA ?`` before any work was measured. The evaluations after the last training stage
  are the part it cannot see (it reads 0s there). Work done before a resume
  (``advance(name, done, measured=False)``, what ``fit`` reports after restoring a
  checkpoint) counts as done but not as measured. ``clock`` (seconds, default
  ``time.perf_counter``) is injectable for tests.
  """

  def __init__(self, stages: Sequence[tuple[str, int]], clock: Callable[[], float] | None = None):
    self._clock = clock or time.perf_counter
    self._order = [name for name, _ in stages]
    if len(set(self._order)) != len(self._order):
      raise ValueError(f"StudyProgress: stage names repeat: {self._order}")
    self._work = {name: int(work) for name, work in stages}
    self._done = dict.fromkeys(self._order, 0)
    self._finished: set[str] = set()
    self._running: dict[str, int] = {}   # name -> its work done when it started here
    self._current: str | None = None
    self._measured = 0    # work those stages did in this process
    self._t0 = self._clock()
    self._first_start: float | None = None

  def _check(self, name: str) -> None:
    if name not in self._work:
      raise ValueError(f"StudyProgress: stage {name!r} is not in the plan {self._order}")

  def start(self, name: str) -> None:
    self._check(name)
    if self._first_start is None:
      self._first_start = self._clock()
    self._running[name] = self._done[name]
    self._current = name

  def advance(self, name: str, done: int, *, measured: bool = True) -> None:
    """``done``: images processed so far in stage ``name`` (clipped to its work).
    ``measured=False``: they were processed before this process resumed the stage."""
    self._check(name)
    self._done[name] = min(int(done), self._work[name])
    if not measured and name in self._running:
      self._running[name] = self._done[name]

  def finish(self, name: str) -> None:
    self._check(name)
    if name in self._running:
      # Only the work this process reported (``advance``) counts as measured: a stage
      # started and then found complete on disk (reused) trained nothing here, and
      # counting its whole work as done in a fraction of a second would make the ETA
      # of everything after it near zero.
      self._measured += self._done[name] - self._running.pop(name)
    self._done[name] = self._work[name]
    self._finished.add(name)
    if self._current == name:
      self._current = None

  def remaining(self) -> int:
    """Work (images) of the study not done yet."""
    return sum(self._work[n] - self._done[n] for n in self._order if n not in self._finished)

  def eta_seconds(self) -> float | None:
    """Remaining work x seconds elapsed per unit of work measured; None before any."""
    work = self._measured + sum(self._done[n] - base for n, base in self._running.items())
    return None if work <= 0 else self.remaining() * (self._clock() - self._first_start) / work

  def describe(self) -> str:
    """E.g. ``study: stage 3/9 experts/jpeg, 2m10s elapsed, ETA 5m20s``."""
    total = len(self._order)
    if self._current is not None:
      where = f"stage {self._order.index(self._current) + 1}/{total} {self._current}"
    else:
      where = f"{len(self._finished)}/{total} stages done"
    eta = self.eta_seconds()
    return (f"study: {where}, {_duration(self._clock() - self._t0)} elapsed, "
            f"ETA {'?' if eta is None else _duration(eta)}")


class EvalProgress:
  """Lines while one model is evaluated, so a long evaluation is never silent.

  ``plan(parts)``: ``(part, work)`` pairs in evaluation order (the clean images, then each
  degradation; ``work`` = images x levels scored). ``done(part)`` after each part logs,
  when at least ``every`` seconds passed since the last line (or the start),
  ``[eval <name>] rain done (3/4), 24s elapsed, ETA 8s``, and after the last part, when
  the whole evaluation took ``every`` seconds or more, ``[eval <name>] done in 45s``:
  an evaluation shorter than ``every`` prints nothing.
  ETA = remaining work x elapsed seconds / work done (the first part's compilation is in
  the rate). ``clock`` (seconds, default ``time.perf_counter``) is injectable for tests.
  """

  def __init__(self, name: str, every: float = 10.0, clock: Callable[[], float] | None = None):
    self.name, self.every = name, float(every)
    self._clock = clock or time.perf_counter
    self._t0 = self._last = self._clock()
    self._work: dict[str, int] = {}
    self._done: list[str] = []

  def plan(self, parts: Sequence[tuple[str, int]]) -> None:
    self._work = {part: max(int(work), 1) for part, work in parts}

  def done(self, part: str) -> None:
    if part not in self._work:
      raise ValueError(f"EvalProgress: part {part!r} is not in the plan {list(self._work)}")
    self._done.append(part)
    now = self._clock()
    elapsed = now - self._t0
    if len(self._done) == len(self._work):
      if elapsed >= self.every:
        logging.info("[eval %s] done in %s", self.name, _duration(elapsed))
      return
    if now - self._last < self.every:
      return
    self._last = now
    work = sum(self._work[p] for p in self._done)
    eta = (sum(self._work.values()) - work) * elapsed / work
    logging.info("[eval %s] %s done (%d/%d), %s elapsed, ETA %s", self.name, part,
                 len(self._done), len(self._work), _duration(elapsed), _duration(eta))
