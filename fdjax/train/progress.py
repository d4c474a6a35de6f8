"""Progress lines and a JSON-lines metrics file for a training run."""

from __future__ import annotations

import json
import os
import time

from absl import logging


class MetricsWriter:
  """Appends one JSON object per line to ``path`` (created with its folder)."""

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

  def write(self, record: dict) -> None:
    with open(self.path, "a") as f:
      f.write(json.dumps({k: _plain(v) for k, v in record.items()}) + "\n")


def _plain(v):
  try:
    return float(v) if not isinstance(v, (str, int, bool)) else v
  except (TypeError, ValueError):
    return str(v)


class Progress:
  """Logs ``step/total, loss, lr, images/s, ETA`` lines; throughput over the last interval."""

  def __init__(self, name: str, total_steps: int, batch_size: int, start_step: int = 0):
    self.name, self.total, self.batch_size = name, total_steps, batch_size
    self._last_step, self._last_time = start_step, time.perf_counter()

  def line(self, step: int, metrics: dict, lr: float) -> dict:
    now = time.perf_counter()
    steps = max(step - self._last_step, 1)
    seconds = max(now - self._last_time, 1e-9)
    images_per_s = steps * self.batch_size / seconds
    eta_s = (self.total - step) * seconds / steps
    self._last_step, self._last_time = step, now
    extras = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k not in ("loss", "finite"))
    logging.info("[%s] step %d/%d loss %.4f lr %.3g %.0f img/s ETA %s %s", self.name, step,
                 self.total, metrics["loss"], lr, images_per_s, _hms(eta_s), extras)
    return {"images_per_s": images_per_s, "eta_s": eta_s}


def _hms(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
