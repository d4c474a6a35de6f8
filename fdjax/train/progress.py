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

  The ETA has two parts, since a stage's cost is not proportional to its images (its
  compilation, validation and the evaluations after it do not scale with them):
  - training: remaining images x the training rate, seconds per image between a stage's
    progress reports (each stage's first report, which holds its compilation, left out):
    the training stage's own images at its own rate once measured (an EA-Adam
    population step trains P members and their critics: ``population_sr:reduced``'s
    study ETA read 1m50s while its ea_adam stage alone had 9 minutes left), the other
    stages' at the rate over all the measured training;
  - the rest, by cycle: a cycle runs from a stage's start, where that stage then trains
    here, to the next such start (its compilation, validation, checkpoints, and the
    evaluations and soups after it). Each cycle to come (a planned stage with work left
    that has not begun training here) costs the mean of the finished cycles' time
    outside training (the current cycle's so far, while none has finished), and the
    current cycle what it has not spent of that mean yet.
  Measured on the restoration quickstart (``BUILD_NOTES.md``, 2026-12-07, night): the
  first ETA 1.08 of the time left, 0.77 at the end of the base, then 0.4-0.8 of it (one
  rate for every stage's images, the same hour: 0.85, 0.63, 0.36-0.65; one rate over
  all the time, before cycles: 1.43, and 8.9 on the quickstart). It stays short where
  evaluations bunch (after the experts, and after the last stage), since the
  evaluations to come are not planned ahead.
  ``ETA ?`` before any training rate was measured. Work done before a resume
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
    self._current: str | None = None
    self._t0 = self._clock()
    self._current_start = 0.0   # when ``_current`` started
    self._train_s, self._train_work = 0.0, 0   # measured training intervals, all stages
    self._stage_train: dict[str, tuple[float, int]] = {}   # the same, per stage
    self._mark: tuple[float, int] | None = None   # (time, done): the last report in training
    self._training: str | None = None   # the stage training in the current cycle
    self._cycle_start: float | None = None
    self._cycle_train_from = 0.0   # ``_train_s`` when the current cycle began
    self._cycles, self._cycles_other_s = 0, 0.0   # finished cycles; their time not training

  def _check(self, name: str) -> None:
    if name not in self._work:
      raise ValueError(f"StudyProgress: stage {name!r} is not in the plan {self._order}")

  def start(self, name: str) -> None:
    self._check(name)
    self._current, self._current_start = name, self._clock()

  def _begin_training(self, name: str, now: float) -> None:
    """``name`` trains here: a cycle begins at its start, closing the one before."""
    begin = self._current_start if name == self._current else now
    if self._cycle_start is not None:
      self._cycles += 1
      self._cycles_other_s += max(begin - self._cycle_start - self._cycle_train_s(), 0.0)
    self._cycle_start, self._cycle_train_from, self._training = begin, self._train_s, name

  def _cycle_train_s(self) -> float:
    """Seconds of measured training in the current cycle."""
    return self._train_s - self._cycle_train_from

  def advance(self, name: str, done: int, *, measured: bool = True) -> None:
    """``done``: images processed so far in stage ``name`` (clipped to its work).
    ``measured=False``: they were processed before this process resumed the stage."""
    self._check(name)
    done = min(int(done), self._work[name])
    now = self._clock()
    if measured:
      if self._training != name:
        self._begin_training(name, now)
        self._mark = None
      if self._mark is not None and done > self._mark[1]:
        seconds, work = now - self._mark[0], done - self._mark[1]
        self._train_s += seconds
        self._train_work += work
        stage_s, stage_work = self._stage_train.get(name, (0.0, 0))
        self._stage_train[name] = (stage_s + seconds, stage_work + work)
      self._mark = (now, done)   # the first report (the compilation) only sets the mark
    self._done[name] = done

  def finish(self, name: str) -> None:
    self._check(name)
    if name == self._training:
      self._mark = None   # its training is over; its cycle goes on (evaluations)
    self._done[name] = self._work[name]
    self._finished.add(name)
    if self._current == name:
      self._current = None

  def remaining(self) -> int:
    """Work (images) of the study not done yet."""
    return sum(self._work[n] - self._done[n] for n in self._order if n not in self._finished)

  def eta_seconds(self) -> float | None:
    """Seconds left (class docstring); None before a training rate was measured."""
    if self._train_work <= 0:
      return None
    now = self._clock()
    training_now = now - self._mark[0] if self._mark is not None else 0.0
    spent = max(now - self._cycle_start - self._cycle_train_s() - training_now, 0.0)
    per_cycle = self._cycles_other_s / self._cycles if self._cycles else spent
    to_come = sum(1 for n in self._order if n not in self._finished and n != self._training
                  and self._work[n] > self._done[n])
    # the training stage's images at its own rate (none left once it finished), the rest
    # at the rate over all the measured training
    stage_s, stage_work = self._stage_train.get(self._training, (0.0, 0))
    own = self._work[self._training] - self._done[self._training] if stage_work else 0
    training = ((self.remaining() - own) * self._train_s / self._train_work
                + (own * stage_s / stage_work if own else 0.0))
    return training + per_cycle * to_come + max(per_cycle - spent, 0.0)

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
