"""The one training loop: epochs of host batches through a jitted step, with
periodic logging, checkpoints, exact resume and a stop on non-finite loss.

Resume order (stated once, here): if ``checkpointer`` holds a checkpoint it is
restored into ``state``'s structure and training continues from its step; the
data position follows from the step (epoch = step // steps_per_epoch, batch =
step % steps_per_epoch, each epoch's order a function of (seed, epoch)), so a
resumed run sees exactly the batches an uninterrupted one would. Otherwise
``state`` (from an earlier stage's checkpoint or a fresh init) is the start. A
checkpoint that cannot be read raises; it is never silently replaced.

On a stop request (``fdjax.train.stop``: SIGTERM, Ctrl-C, the run's time limit), asked
after every step, the loop saves a checkpoint of the step it has reached (after the epoch's
hook when that step ends an epoch) and raises ``RunStopped``; resuming from it is exact
as above.

Multi-process runs (``fdjax.distributed``): every process runs ``fit`` on the same
arguments. Batches are global arrays of which each process builds only its own rows
(``batching``); the step's outputs are replicated, so every process reads the same
metrics and takes the same decisions; checkpoints are saved and restored by all
processes together (orbax); ``metrics.jsonl`` is written by process 0 only.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import jax
import numpy as np
from absl import logging

from fdjax.data import batching
from fdjax.distributed import is_main_process
from fdjax.errors import ConfigError, UserError
from fdjax.train.checkpoint import Checkpointer
from fdjax.train.mesh import check_batch_size, data_sharding, place, replicated
from fdjax.train.progress import MetricsWriter, Progress, StudyProgress
from fdjax.train.stop import STOP, RunStopped
from fdjax.train.state import TrainState


class NonFiniteLossError(UserError, FloatingPointError):
  """Raised when a training step produced a NaN/Inf loss or gradient."""


@dataclasses.dataclass
class LoopConfig:
  """How long and how often. ``max_steps`` (> 0) stops early, e.g. to simulate a crash."""

  epochs: int
  batch_size: int
  seed: int = 0
  log_every_steps: int = 50
  checkpoint_every_steps: int = 500
  max_steps: int = 0


EpochEndHook = Callable[[TrainState, int], "dict | tuple[TrainState, dict] | None"]


def fit(state: TrainState, train_step: Callable, train_split, *, loop: LoopConfig, mesh,
        workdir: str, schedule: Callable[[int], float] | None = None, name: str = "train",
        checkpointer: Checkpointer | None = None, frozen=None,
        on_epoch_end: EpochEndHook | None = None,
        study: StudyProgress | None = None) -> TrainState:
  """Trains ``state`` on ``train_split`` (an ``ImageSet``, or a ``ShareSplits`` whose
  shares draw on their own pools) and returns the final state.

  ``frozen`` (read-only teacher variables) is placed on the mesh once, replicated, and
  passed to every step unchanged (not copied to the devices at each step).
  Writes checkpoints to ``<workdir>/checkpoints`` (unless ``checkpointer`` is given) and
  metrics to ``<workdir>/metrics.jsonl`` (scalars as numbers, vector metrics such as a
  population's loss ``[P]`` as lists; the console shows a vector's mean).

  ``on_epoch_end(state, epoch)`` returns extra metrics for ``metrics.jsonl`` (e.g.
  validation accuracy), or ``(new_state, metrics)``: ``new_state`` (same structure and
  shardings) replaces the training state, e.g. an evolutionary step that swaps
  population members; training continues from it and a checkpoint of it is saved right
  away. A periodic checkpoint falling on an epoch's last step is saved after the hook,
  so a resumed run never skips a hook that an uninterrupted run made.

  ``study``: the whole study's progress; the loop reports the images processed so far
  in this stage (``study.advance(name, step * batch_size)``) and appends
  ``study.describe()`` to its progress lines. Starting and finishing the stage in it is
  the caller's job.

  A checkpointer made here is closed when ``fit`` returns or raises; one passed in is
  the caller's to close.
  """
  if checkpointer is None:
    own = Checkpointer(os.path.join(workdir, "checkpoints"))
    try:
      return fit(state, train_step, train_split, loop=loop, mesh=mesh, workdir=workdir,
                 schedule=schedule, name=name, checkpointer=own, frozen=frozen,
                 on_epoch_end=on_epoch_end, study=study)
    finally:
      own.close()   # orbax's manager: its threads end here, not when collected
  check_batch_size(loop.batch_size, mesh)
  steps_per_epoch = batching.num_batches(len(train_split), loop.batch_size, drop_remainder=True)
  if steps_per_epoch == 0:
    raise ConfigError(f"[{name}] batch size {loop.batch_size} is larger than the training "
                      f"split ({len(train_split)} examples)",
                      hint="lower batch_size, or use more training data")
  total_steps = loop.epochs * steps_per_epoch
  if frozen is not None:
    frozen = place(frozen, replicated(mesh), copy=False)
  if checkpointer.latest_step() is not None:
    state, meta = checkpointer.restore(state)
    logging.info("[%s] resumed from step %d (%s)", name, int(state.step), checkpointer.directory)
  writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl")) if is_main_process() else None
  step = int(jax.device_get(state.step))
  if writer is not None:
    writer.drop_after(step)   # what a crash logged after the checkpoint is logged again
  if study is not None:
    study.advance(name, step * loop.batch_size, measured=False)   # done before this process
  progress = Progress(name, total_steps, loop.batch_size, start_step=step)
  first_step = step
  sharding = data_sharding(mesh)
  last_saved = step
  finite_since_save = []  # device scalars; read at log/save points only (no per-step sync)

  def check_finite(at_step: int) -> None:
    """Raises at the first step since the last save whose loss or gradient was not
    finite (``finite_since_save[i]`` is step ``last_saved + 1 + i``'s flag)."""
    flags = [float(np.min(f)) for f in jax.device_get(finite_since_save)]
    bad = next((i for i, f in enumerate(flags) if f < 1), None)
    if bad is not None:
      latest = checkpointer.latest_step()
      where = ("no checkpoint yet" if latest is None else
               f"the last good checkpoint is step {latest} in {checkpointer.directory}")
      raise NonFiniteLossError(
          f"[{name}] non-finite loss or gradient at step {last_saved + 1 + bad} (of "
          f"{total_steps}; found at step {at_step}); stopped without saving ({where})",
          hint="lower the learning rate or check the inputs")

  def save(at_step: int, extra: dict | None = None) -> None:
    nonlocal last_saved
    check_finite(at_step)
    checkpointer.save(state, {"stage": name, "step": at_step, **(extra or {})})
    finite_since_save.clear()
    last_saved = at_step

  stop_at = min(total_steps, loop.max_steps) if loop.max_steps > 0 else total_steps

  def periodic_save_due(at_step: int) -> bool:
    return at_step % loop.checkpoint_every_steps == 0 and at_step < stop_at

  def save_unless_saved(at_step: int) -> None:
    if at_step > last_saved or checkpointer.latest_step() is None:
      save(at_step)

  def stop_here(at_step: int, reason: str) -> None:
    save_unless_saved(at_step)
    raise RunStopped(reason, name, at_step, checkpointer.directory)

  STOP.check()   # a stop request whose raise was lost (fdjax.train.stop)
  if step < stop_at:   # the first step compiles: seconds to minutes without a line else
    logging.info("[%s] training steps %d-%d of %d, %d image%s each (the first step "
                 "compiles)", name, step + 1, stop_at, total_steps, loop.batch_size,
                 "" if loop.batch_size == 1 else "s")
  stop = None
  with STOP.training():
    for epoch in range(step // steps_per_epoch, loop.epochs):
      if step >= stop_at:
        break
      for batch in batching.train_batches(train_split, loop.batch_size, seed=loop.seed,
                                          epoch=epoch, start_batch=step % steps_per_epoch,
                                          sharding=sharding):
        state, metrics = train_step(state, batch, frozen)
        step += 1
        finite_since_save.append(metrics["finite"])
        if (step == first_step + 1 and step % loop.log_every_steps and step != stop_at):
          # The first step compiles: the stage's images/s and ETA start after it (its
          # first line read ETA 0:01:38 for a stage 8 s from its end), unless this step
          # is logged itself (a resumed run's: no interval would be left to measure).
          jax.block_until_ready(metrics["finite"])
          progress.restart(step)
          if study is not None:   # the study's training rate starts here too
            study.advance(name, step * loop.batch_size)
        if step % loop.log_every_steps == 0 or step == stop_at:
          host = {k: _host(v) for k, v in jax.device_get(metrics).items()}
          if not np.all(np.isfinite(host["loss"])) or np.min(host["finite"]) < 1:
            check_finite(step)
          # the rate this step's update used (the optimiser's count before it: step - 1)
          lr = float(schedule(step - 1)) if schedule else float("nan")
          if study is not None:
            study.advance(name, step * loop.batch_size)
          rates = progress.line(step, host, lr, study.describe() if study is not None else "")
          _write(writer, {"stage": name, "step": step, "epoch": step / steps_per_epoch,
                          "lr": lr, **host, **rates})
        epoch_end_hook_due = on_epoch_end is not None and step % steps_per_epoch == 0
        stop = STOP.poll()   # a stop at an epoch's end waits for the epoch's hook
        if stop and not epoch_end_hook_due:
          stop_here(step, stop)
        if periodic_save_due(step) and not epoch_end_hook_due:
          save(step)
        if step >= stop_at:
          break
      if step % steps_per_epoch == 0 and on_epoch_end is not None:
        check_finite(step)   # the hook (validation, evolution) never sees a NaN state
        state, extra, replaced = _run_hook(on_epoch_end, state, epoch)
        _write(writer, {"stage": name, "step": step, "epoch": epoch + 1, **extra})
        stop = stop or STOP.poll()   # also a request made while the hook ran
        if stop:
          stop_here(step, stop)
        if (replaced and step < stop_at) or periodic_save_due(step):
          save(step)
  save_unless_saved(step)
  return state


def _write(writer: MetricsWriter | None, record: dict) -> None:
  """Appends ``record`` to metrics.jsonl (process 0 only: ``writer`` is None elsewhere)."""
  if writer is not None:
    writer.write(record)


def _host(v):
  """A fetched metric: a float for a scalar, a list (nested for ndim > 1) for an array."""
  return float(v) if np.ndim(v) == 0 else np.asarray(v).tolist()


def _run_hook(hook: EpochEndHook, state: TrainState, epoch: int):
  """``(state, metrics, replaced)`` from ``hook(state, epoch)``'s dict or (state, dict) pair."""
  result = hook(state, epoch)
  if isinstance(result, tuple):
    if len(result) != 2 or not isinstance(result[0], TrainState):
      raise TypeError(f"on_epoch_end must return a metrics dict or (TrainState, dict), got a "
                      f"tuple of {len(result)}: {[type(r).__name__ for r in result]}")
    new_state, extra = result
    return new_state, dict(extra or {}), True
  return state, dict(result or {}), False
