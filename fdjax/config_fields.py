"""Names an unknown config field: ``unknown_field_message(config, 'clean.epochz')`` is
the line for an override of a field that does not exist (with the nearest field names);
``unknown_override_message(argv)`` finds that field in a command line whose flag parsing
failed (ml_collections only reports the last part of the key)."""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from typing import Sequence

from fdjax.json_files import write_json
from fdjax.validate_values import MISSING, get

CONFIG_JSON = "config.json"   # a run's config, and each finished stage's

def field_names(config, prefix: str = "") -> list[str]:
  """Every dotted field name of ``config``, blocks included (``'clean'``,
  ``'clean.optimizer'``, ``'clean.optimizer.lr'``, ...), in the config's order."""
  out = []
  for key, value in config.items():
    name = f"{prefix}{key}"
    out.append(name)
    if hasattr(value, "items") and hasattr(value, "keys"):
      out.extend(field_names(value, name + "."))
  return out


def unknown_field_message(config, dotted_key: str) -> str:
  """``"unknown config field 'clean.epochz'; did you mean 'clean.epochs'?"``.

  Suggestions, the first kind that finds any (at most three): fields of the same block
  with the name as one of their words (``ema`` -> ``ema_decay``), then those spelled
  alike; fields elsewhere with the same last part (``clean.lr`` ->
  ``clean.optimizer.lr``, same top-level block first); any field spelled very alike.
  With none, the message lists the fields of the nearest existing block.
  """
  names = field_names(config)
  leaves = [n for n in names if not hasattr(get(config, n), "keys")]
  parent, _, last = dotted_key.rpartition(".")
  siblings = {n.rpartition(".")[2]: n for n in leaves if n.rpartition(".")[0] == parent}
  words = [siblings[k] for k in siblings if last and last in k.split("_")]
  alike = [siblings[k] for k in difflib.get_close_matches(last, list(siblings), n=3, cutoff=0.6)]
  nearest = list(dict.fromkeys(words + alike))[:3]
  if not nearest:
    head = dotted_key.split(".", 1)[0]
    same_last = [n for n in leaves if n.rpartition(".")[2] == last]
    same_head = [n for n in same_last if n.split(".", 1)[0] == head]
    nearest = sorted(same_head or same_last, key=len)[:3]
  if not nearest:
    nearest = difflib.get_close_matches(dotted_key, leaves, n=3, cutoff=0.8)
  message = f"unknown config field {dotted_key!r}"
  if nearest:
    quoted = [repr(n) for n in nearest]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"{message}; did you mean {listed}?"
  other = _other_task_config(config)
  if other is not None and get(other, dotted_key) is not MISSING:
    return (f"{message}: it is a field of the {other.task} configs, and this config's task "
            f"is {config.task}")
  parts = dotted_key.split(".")
  for depth in range(len(parts) - 1, 0, -1):
    block = ".".join(parts[:depth])
    value = get(config, block)
    if value is not MISSING and hasattr(value, "keys"):
      return f"{message}; the fields of {block!r} are {', '.join(value.keys())}"
  return f"{message}; the top-level fields are {', '.join(config.keys())}"


def _other_task_config(config):
  """The default config of the task ``config`` is not (classification <-> restoration),
  or None for a config without a known task."""
  from fdjax.config import base_config
  from fdjax.config_restoration import restoration_config

  task = config.get("task") if hasattr(config, "get") else None
  return {"classification": restoration_config, "restoration": base_config}.get(
      task, lambda: None)()


def unknown_override_message(argv: Sequence[str], flag: str = "config") -> str | None:
  """For a command line whose flag parsing failed: loads the config file named by
  ``--<flag>=<path>[:<arg>]`` (or ``--<flag> <path>``) as ml_collections does, and returns
  ``unknown_field_message`` for the first ``--<flag>.<field>[=value]`` override that is not
  a field of it; None when every override names a field or the file cannot be loaded."""
  spec, overrides = None, []
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{flag}="):
      spec = arg.split("=", 1)[1]
    elif arg == f"--{flag}" and i + 1 < len(argv):
      spec = argv[i + 1]
    elif arg.startswith(f"--{flag}."):
      overrides.append(arg[len(flag) + 3:].split("=", 1)[0])
  if spec is None or not overrides:
    return None
  try:
    config = load_config_file(spec)
  except Exception:  # noqa: BLE001  (the caller re-raises the original error)
    return None
  names = set(field_names(config))
  for key in overrides:
    if key not in names:
      return unknown_field_message(config, key)
  return None


def write_config_json(folder: str, config) -> None:
  """``<folder>/config.json``: ``config`` (a ConfigDict) as plain JSON, written whole
  (``fdjax.json_files.write_json``: a stop signal raises wherever the program is, and
  ``fdjax.load_model`` reads the file)."""
  write_json(os.path.join(folder, CONFIG_JSON), json.loads(config.to_json_best_effort()),
             indent=2)


def check_workdir_task(config, workdir: str) -> None:
  """``ConfigError`` when ``workdir`` holds a run of another task than ``config.task``
  (its ``config.json``): every stage would differ, and retraining them there would leave
  the other task's files beside the new ones. A workdir without a readable record is
  left to the stages' fingerprints."""
  from fdjax.errors import ConfigError

  try:
    with open(os.path.join(workdir, CONFIG_JSON)) as f:
      task = json.load(f).get("task")
  except (OSError, ValueError, AttributeError):
    return
  if task is not None and task != config.task:
    raise ConfigError(f"--workdir {workdir} holds a {task} run (its {CONFIG_JSON}), and "
                      f"this config's task is {config.task}",
                      hint="use a new --workdir: a workdir holds the run of one task")


def load_config_file(spec: str):
  """``'path.py'`` -> ``get_config()``; ``'path.py:arg'`` -> ``get_config('arg')`` (as
  ``--config`` reads it; tests load the shipped configs with it)."""
  path, sep, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_fdjax_user_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if sep else module.get_config()
