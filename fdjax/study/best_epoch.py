"""Model selection on validation (``config.selection = 'val'``): after every epoch the
stage's model is scored on the held-out split under the stage's degradations at fixed
keys; the best epoch's variables are kept beside the run's checkpoints (``best``,
``best.json``) and are the stage's result."""

from __future__ import annotations

import math
import os
import shutil

from absl import logging

from fdjax.distributed import write_once
from fdjax.eval.metric import jit_clean, predictor, split_scores, split_scores_by_share
from fdjax.json_files import read_json, write_json
from fdjax.study.context import RunContext
from fdjax.study.fixed_keys import fixed_key_transform
from fdjax.train.checkpoint import CorruptCheckpointError
from fdjax.train.ema import evaluated_variables
from fdjax.train.loop import NonFiniteLossError
from fdjax.train.variables_io import load_variables, save_variables


class BestOnValidation:
  """Keeps the variables of the epoch with the best validation metric (task's direction);
  with two or more ``shares`` (``Recipe.selection_shares``) also reports it per share."""

  def __init__(self, ctx: RunContext, name: str, degrade, model, shares: tuple[str, ...] = ()):
    self.ctx, self.model, self.shares, self.name = ctx, model, tuple(shares), name
    self.path = os.path.join(ctx.stage_dir(name), "best")
    self.record_path = os.path.join(ctx.stage_dir(name), "best.json")
    self.predict = jit_clean(predictor(ctx.task, model), ctx.mesh)
    self.transform = None if degrade is None else fixed_key_transform(ctx, degrade)
    self.key_name = f"val_{ctx.task.metric.name}"

  def on_epoch_end(self, state, epoch: int) -> dict:
    self._recover()
    metric = self.ctx.task.metric.name
    variables = evaluated_variables(state)   # the parameters' average, when the stage keeps one
    args = (self.ctx.task, self.predict, variables, self.ctx.dataset.validation)
    options = dict(batch_size=self.ctx.config.eval_batch_size, mesh=self.ctx.mesh,
                   transform=self.transform, metrics=(metric,))
    per_share = {}
    if len(self.shares) > 1:
      overall, shares = split_scores_by_share(*args, shares=len(self.shares), **options)
      per_share = {f"{self.key_name}/{name}": scores[metric]
                   for name, scores in zip(self.shares, shares) if scores}
    else:
      overall = split_scores(*args, **options)
    record = {"epoch": epoch + 1, self.key_name: overall[metric], **per_share}
    if math.isnan(record[self.key_name]):
      raise NonFiniteLossError(f"[{self.name}] epoch {epoch + 1}: the validation "
                               f"{metric} is NaN (the model's outputs are not finite)",
                               hint="lower the learning rate, or train in float32")
    best = self._record()
    improved = self.ctx.task.metric.better(record[self.key_name],
                                           None if best is None else best[self.key_name])
    if improved:
      save_variables(self.path + ".new", variables)   # collective; beside the old best

      def swap():   # the record staged first: every state a kill leaves, _recover mends
        write_json(self.record_path + ".new", record)
        if os.path.exists(self.path):
          os.rename(self.path, self.path + ".old")
        os.rename(self.path + ".new", self.path)
        os.replace(self.record_path + ".new", self.record_path)
        shutil.rmtree(self.path + ".old", ignore_errors=True)

      write_once(swap, self.path)
    logging.info("[%s] epoch %d: validation %s, %s", self.name, epoch + 1, self._describe(record),
                 "the best so far" if improved else f"the best is epoch {best['epoch']}")
    return {k: v for k, v in record.items() if k != "epoch"}

  def _recover(self) -> None:
    """Ends a swap of the best epoch that a run was stopped in (``on_epoch_end``'s
    ``swap``), in process 0: not begun (``best.new`` still there) -> undone, the old best
    put back if it was moved aside; done but for the record -> the record moved in; the
    old best's leftover copy removed. Afterwards ``best`` and ``best.json`` agree."""
    path, record = self.path, self.record_path

    def mend():
      if os.path.exists(path + ".new"):
        # The staged record first: left beside the old best without best.new, it would
        # read as a swap done but for the record (the branch below).
        if os.path.exists(record + ".new"):
          os.remove(record + ".new")
        if not os.path.exists(path) and os.path.exists(path + ".old"):
          os.rename(path + ".old", path)
        shutil.rmtree(path + ".new")
      elif os.path.exists(record + ".new"):
        os.replace(record + ".new", record)
      shutil.rmtree(path + ".old", ignore_errors=True)

    write_once(mend, f"{path} (an unfinished swap)")

  def _record(self):
    if os.path.exists(self.record_path):
      return read_json(self.record_path, hint=f"delete the stage folder "
                       f"{os.path.dirname(self.path)} and run the study again: it trains anew")
    return None

  def best(self) -> dict:
    self._recover()
    record = self._record()
    if record is None:
      raise FileNotFoundError(f"[{self.name}] no validation record at {self.record_path}: "
                              f"the stage ended without scoring an epoch")
    logging.info("[%s] selected epoch %d by validation %s", self.name, record["epoch"],
                 self._describe(record))
    try:
      return load_variables(self.path, self.ctx.template_variables(self.model))
    except (FileNotFoundError, CorruptCheckpointError) as e:
      # A finished stage's run resumes at its last step, where no epoch is scored again:
      # only training the stage anew writes the best epoch's variables again.
      raise CorruptCheckpointError(
          f"[{self.name}] the best epoch's variables are missing or damaged: {e}",
          hint=f"delete the stage folder {os.path.dirname(self.path)} and run the study "
               "again with the same --workdir: the stage trains anew") from None

  def _describe(self, record: dict) -> str:
    """``'psnr 28.29 dB (denoise 31.04, haze 23.04)'``: the mean, then each share's, as
    the tables show the metric (``MetricSpec.display``, its decimals and unit)."""
    spec = self.ctx.task.metric
    shown = lambda value: f"{spec.display(value):.{spec.decimals}f}"
    unit = f" {spec.unit}" if spec.unit else ""
    shares = [f"{name} {shown(record[f'{self.key_name}/{name}'])}" for name in self.shares
              if f"{self.key_name}/{name}" in record]
    return (f"{spec.name} {shown(record[self.key_name])}{unit}"
            + (f" ({', '.join(shares)})" if shares else ""))
