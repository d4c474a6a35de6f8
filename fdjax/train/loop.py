"""The one training loop: epochs of host batches through a jitted step, with
periodic logging, checkpoints, exact resume and a stop on non-finite loss.

Resume order (stated once, here): if ``checkpointer`` holds a checkpoint it is
restored into ``state``'s structure and training continues from its step; the
data position follows from the step (epoch = step // steps_per_epoch, batch =
step % steps_per_epoch, each epoch's order a function of (seed, epoch)), so a
resumed run sees exactly the batches an uninterrupted one would. Otherwise
``state`` (from an earlier stage's checkpoint or a fresh init) is the start. A
checkpoint that cannot be read raises; it is never silently replaced.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable

import jax
import numpy as np
from absl import logging

from fdjax.data import batching
from fdjax.train.checkpoint import Checkpointer
from fdjax.train.mesh import check_batch_size, data_sharding
from fdjax.train.progress import MetricsWriter, Progress
from fdjax.train.state import TrainState


class NonFiniteLossError(FloatingPointError):
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


def fit(state: TrainState, train_step: Callable, train_split, *, loop: LoopConfig, mesh,
        workdir: str, schedule: Callable[[int], float] | None = None, name: str = "train",
        checkpointer: Checkpointer | None = None, frozen=None,
        on_epoch_end: Callable[[TrainState, int], dict] | None = None) -> TrainState:
  """Trains ``state`` on ``train_split`` (an ``ImageSet``) and returns the final state.

  ``frozen`` (read-only teacher variables) is passed to every step unchanged.
  Writes checkpoints to ``<workdir>/checkpoints`` (unless ``checkpointer`` is given) and
  metrics to ``<workdir>/metrics.jsonl``. ``on_epoch_end(state, epoch)`` may return
  extra metrics (e.g. validation accuracy) recorded with the epoch's checkpoint.
  """
  check_batch_size(loop.batch_size, mesh)
  steps_per_epoch = batching.num_batches(len(train_split), loop.batch_size, drop_remainder=True)
  if steps_per_epoch == 0:
    raise ValueError(f"[{name}] batch size {loop.batch_size} is larger than the training split "
                     f"({len(train_split)} examples)")
  total_steps = loop.epochs * steps_per_epoch
  checkpointer = checkpointer or Checkpointer(os.path.join(workdir, "checkpoints"))
  if checkpointer.latest_step() is not None:
    state, meta = checkpointer.restore(state)
    logging.info("[%s] resumed from step %d (%s)", name, int(state.step), checkpointer.directory)
  writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"))
  step = int(jax.device_get(state.step))
  progress = Progress(name, total_steps, loop.batch_size, start_step=step)
  sharding = data_sharding(mesh)
  last_saved = step
  finite_since_save = []  # device scalars; read at log/save points only (no per-step sync)

  def check_finite(at_step: int) -> None:
    if finite_since_save and float(np.min(jax.device_get(finite_since_save))) < 1.0:
      raise NonFiniteLossError(
          f"[{name}] non-finite loss or gradient between steps {last_saved} and {at_step}; "
          f"stopped without saving. The last good checkpoint is step {checkpointer.latest_step()} "
          f"in {checkpointer.directory}. Lower the learning rate or check the inputs.")

  def save(at_step: int, extra: dict | None = None) -> None:
    nonlocal last_saved
    check_finite(at_step)
    checkpointer.save(state, {"stage": name, "step": at_step, **(extra or {})})
    finite_since_save.clear()
    last_saved = at_step

  stop_at = min(total_steps, loop.max_steps) if loop.max_steps > 0 else total_steps
  for epoch in range(step // steps_per_epoch, loop.epochs):
    if step >= stop_at:
      break
    for batch in batching.train_batches(train_split, loop.batch_size, seed=loop.seed, epoch=epoch,
                                        start_batch=step % steps_per_epoch, sharding=sharding):
      state, metrics = train_step(state, batch, frozen)
      step += 1
      finite_since_save.append(metrics["finite"])
      if step % loop.log_every_steps == 0 or step == stop_at:
        host = {k: float(v) for k, v in jax.device_get(metrics).items() if np.ndim(v) == 0}
        if not math.isfinite(host["loss"]):
          check_finite(step)
        lr = float(schedule(step)) if schedule else float("nan")
        rates = progress.line(step, host, lr)
        writer.write({"stage": name, "step": step, "epoch": step / steps_per_epoch, "lr": lr,
                      **host, **rates})
      if step % loop.checkpoint_every_steps == 0 and step < stop_at:
        save(step)
      if step >= stop_at:
        break
    if step % steps_per_epoch == 0 and on_epoch_end is not None:
      extra = on_epoch_end(state, epoch)
      writer.write({"stage": name, "step": step, "epoch": epoch + 1, **extra})
  if step > last_saved or checkpointer.latest_step() is None:
    save(step)
  return state
