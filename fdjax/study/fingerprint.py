"""Stage fingerprints: everything that determines a stage's result, hashed.

A stage is reused (``variables/``) or resumed (``checkpoints/``) only when the
fingerprint stored beside it (``<stage>/fingerprint.json``) equals the one the current
config gives. The fields (``fdjax.study.fingerprint_fields``): the task and its
augmentation, the model, the data source and split and the contents of the training and
validation splits (and of the stage's real pairs: ``Dataset.content_digest``), the
degradations' order for a stage of several, the seed, the stage's config block (epochs,
optimizer, ...) and the other config fields it reads, the level ranges of the
degradations it trains on (and their revisions, once a degradation's function has
changed), the batch size, model selection, and the fingerprints of the stages it starts
from (so a change upstream reaches every stage downstream). Fields a stage reads that do
not change its result in the config at hand (its ``ignores``: the K rows a MoE student
is reported at, which rows report a soup, another soup's weights) are left out, so
changing them retrains nothing.

On a mismatch the run stops before training with one line naming the stage, the
fields that differ (old -> new) and the choices; ``config.on_mismatch='retrain'``
deletes that stage's folder and trains it again (and, through the upstream
fingerprints, everything downstream of it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any, Mapping

from absl import logging

from fdjax.config_fields import write_config_json
from fdjax.distributed import barrier, write_once
from fdjax.errors import UserError
from fdjax.json_files import read_json, write_json
from fdjax.study.fingerprint_fields import plain

FILE = "fingerprint.json"
ON_MISMATCH = ("stop", "retrain")


class FingerprintMismatchError(UserError, RuntimeError):
  """A stage on disk was made by a different config than the current one."""


def digest(fields: Mapping[str, Any]) -> str:
  """sha256 (first 16 hex digits) of the canonical JSON of ``fields``."""
  text = json.dumps(plain(fields), sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(value, Mapping):
    out = {}
    for k, v in value.items():
      out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out
  return {prefix: value}


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
  """``['clean.epochs: 2 -> 3', ...]`` over the flattened fields (sorted)."""
  a, b = _flatten(plain(old)), _flatten(plain(new))
  found = [f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}"
           for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
  if found:
    return found
  # Flattening can hide a change: a top-level key that is itself a dotted path (a
  # stage's ``uses``, e.g. 'data.train_pairs') flattens onto the same names as the
  # nested field it names. Compare the top level as it is.
  a, b = plain(old), plain(new)
  return [f"{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}"
          for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def _holds_work(stage_dir: str) -> bool:
  """Whether ``stage_dir`` holds any file but the fingerprint (checkpoints, metrics,
  variables), in any sub-folder."""
  for root, _, files in os.walk(stage_dir):
    if any(not (root == stage_dir and f == FILE) for f in files):
      return True
  return False


def check_or_record(stage_dir: str, name: str, fields: Mapping[str, Any],
                    on_mismatch: str = "stop", accepted: tuple[str, ...] = ()) -> str:
  """Compares ``fields`` with ``<stage_dir>/fingerprint.json`` and records them.

  No file and no stage on disk: recorded. No file but a stage on disk (made before
  fingerprints existed): trusted with a warning, then recorded. A different file:
  ``on_mismatch='stop'`` raises ``FingerprintMismatchError``; 'retrain' deletes the
  stage folder first. A file whose digest is one of ``accepted`` (the same stage's
  fields as an earlier rule computed them: ``OVERRIDDEN_BY``) is the same stage: kept,
  and re-recorded with ``fields``. A different file in a folder that holds nothing else
  (the run recorded every planned stage and stopped before this one trained) is
  re-recorded: there is nothing to refuse. Returns the digest.
  """
  if on_mismatch not in ON_MISMATCH:
    raise ValueError(f"on_mismatch must be one of {ON_MISMATCH}, got {on_mismatch!r}")
  new = digest(fields)
  path = os.path.join(stage_dir, FILE)
  old = None
  if os.path.exists(path):
    old = read_json(path, hint=f"delete the stage folder {stage_dir} to train it anew: its "
                               "work cannot be checked against the config without the record")
  # what the folder holds, read before process 0 may write to it (below)
  holds_work = old is not None and old.get("digest") != new and _holds_work(stage_dir)
  unrecorded = old is None and os.path.isdir(stage_dir) and bool(os.listdir(stage_dir))
  # Multi-process: every process has read the file before process 0 may rewrite it below
  # (one that read it after would return early and skip the write's barrier).
  barrier(f"fingerprint read {name}")
  stale = False
  if old is not None and old.get("digest") == new:
    return new
  if old is not None and old.get("digest") in accepted:
    logging.info("[%s] fingerprint recorded by an earlier rule: re-recorded", name)
  elif old is not None and not holds_work:
    logging.info("[%s] never trained (its folder holds only %s): re-recorded", name, FILE)
  elif old is not None:
    changes = differences(old.get("fields", {}), fields) or ["(fingerprint format)"]
    if on_mismatch == "stop":
      shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
      raise FingerprintMismatchError(
          f"stage '{name}' in {stage_dir} was made with a different config ({shown})",
          hint="use a new --workdir, or pass --config.on_mismatch=retrain to train this "
               "stage and everything downstream of it again")
    logging.warning("[%s] config changed (%s): retraining it", name, "; ".join(changes[:6]))
    stale = True
  elif unrecorded:
    logging.warning("[%s] made before stage fingerprints existed; trusting it", name)

  def write():
    if stale:   # renamed first: a delete cut short never leaves old work beside no record
      trash = os.path.join(os.path.dirname(stage_dir), f".{os.path.basename(stage_dir)}.stale")
      shutil.rmtree(trash, ignore_errors=True)
      os.rename(stage_dir, trash)
      shutil.rmtree(trash)
    os.makedirs(stage_dir, exist_ok=True)
    write_json(path, {"digest": new, "fields": plain(fields)}, indent=1, default=str)

  write_once(write, f"fingerprint {path}")  # multi-process: process 0 writes, all wait
  return new


def record_config(stage_dir: str, config) -> None:
  """Writes ``<stage_dir>/config.json``: the whole config a finished stage was made (or
  reused) with, what ``fdjax.load_model`` builds its model from. The run's own
  ``config.json`` is the latest run's, which may have trained other stages under
  another config (a later ``--config.methods=scratch --config.data.normalization=...``)
  and left this stage as it was. Process 0 writes (nothing for a stage without a
  folder); every process passes the barrier, whatever its view of the folder."""
  def write():
    if os.path.isdir(stage_dir):
      write_config_json(stage_dir, config)

  write_once(write, f"stage config {stage_dir}")
