"""Use a finished run from your own code::

    import fdjax
    loaded = fdjax.load_model("runs/quickstart", "fusiondistill")
    logits = loaded.predict(images_uint8)          # [B, H, W, 3] uint8 -> [B, C]

``load_model`` rebuilds the model from the config its stage was made with (the stage's
own ``config.json``; for a stage finished before stages recorded it, the run's
``config.json``, written by ``fdjax.pipeline`` once a run's stages match the config) and
the run's ``run.json``, loads the variables
of the method's stage (``<run>/seed_<s>/<stage>/variables``) and returns a jitted
``predict`` that applies the model's own input normalisation (the task's ``predict``).
``fdjax.predictor.load_predictor`` wraps it into ``uint8 image -> uint8 image`` (restoration)
or ``-> class index`` (classification).

Errors a user can fix are ``RunError`` (a ``UserError``, also a ``FileNotFoundError``):
not a run folder, a model the run does not have (``ModelNotInRunError``), a stage that
has not finished (``StageNotFinishedError``, its hint the command that finishes it);
an unknown model name is an ``UnknownModelError`` (also a ``ValueError``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import numbers
import os
import shlex
from typing import Callable

import jax
import ml_collections

from fdjax import tasks
from fdjax.config import parse_list
from fdjax.config_fields import CONFIG_JSON
from fdjax.errors import UserError
from fdjax.eval.metric import jit_clean, on_devices, predictor
from fdjax.image_input import checked_batch
from fdjax.train import init_variables
from fdjax.train.variables_io import load_variables, variables_exist

RERUN = "python -m fdjax.main --config=<the run's config file> --workdir={run} {methods}"


class RunError(UserError, FileNotFoundError):
  """``workdir`` is not a finished fdjax run, or lacks the model asked for."""


class StageNotFinishedError(RunError):
  """The model's stage belongs to the run but has no saved variables yet."""


class ModelNotInRunError(RunError):
  """The run was made without the method that trains this model."""


class UnknownModelError(UserError, ValueError):
  """No method of ``fdjax.methods`` saves a single model of that name."""


@dataclasses.dataclass
class LoadedModel:
  """model: a Flax module; variables: {'params','batch_stats'} (jax arrays on the default
  device); predict: uint8 images
  ``[B, H, W, 3]`` (a classifier's at the run's image size) -> outputs;
  task: the run's ``fdjax.tasks`` task; run_info: ``run.json`` (dataset, num_classes,
  image_shape, class_names); seed: the seed loaded; name: the model's name.

  ``model.apply(variables, task.model_input(images))`` gives ``(outputs, features)``: the
  module takes the task's normalised float input, not uint8 pixels (a classifier's logits
  are ``predict``'s; a restorer's image is in 0..1, unclipped, where ``predict`` also pads
  to the stride, crops back and scales to 0..255)."""

  model: object
  variables: dict
  predict: Callable
  config: ml_collections.ConfigDict
  path: str
  task: object = None
  run_info: dict = dataclasses.field(default_factory=dict)
  seed: int = 0
  name: str = ""

  def __repr__(self) -> str:   # not every variable and config field (84,000 characters)
    return f"LoadedModel(name={self.name!r}, seed={self.seed}, path={self.path!r})"


RUN_FIELDS = ("image_shape",)   # what loading a model reads from run.json


def read_run(workdir: str) -> tuple[ml_collections.ConfigDict, dict]:
  """``(config, run_info)`` of run ``workdir`` (its ``config.json`` and ``run.json``)."""
  if not os.path.isdir(workdir):
    raise RunError(f"run folder {workdir} " + ("is a file, not a folder"
                                               if os.path.exists(workdir) else "does not exist"))
  files = {}
  for name in ("config.json", "run.json"):
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
      raise RunError(f"{path} not found: is {workdir!r} an fdjax run directory (the "
                     "--workdir of python -m fdjax.main)?")
    try:
      with open(path) as f:
        files[name] = json.load(f)
    except (OSError, ValueError) as e:
      raise RunError(f"cannot read {path}: {e}") from None
  missing = [k for k in RUN_FIELDS if not isinstance(files["run.json"], dict)
             or k not in files["run.json"]]
  if missing:
    raise RunError(f"{os.path.join(workdir, 'run.json')} lacks {', '.join(missing)}: "
                   "damaged or not written by fdjax.main")
  return ml_collections.ConfigDict(files["config.json"]), files["run.json"]


def recorded_config(workdir: str, seed: int, path: str, stage: str
                    ) -> ml_collections.ConfigDict | None:
  """The config the stage holding ``path`` (its variables) was made with: the nearest
  ``config.json`` (``fdjax.study.fingerprint.record_config``) in the folders from
  ``path``'s up to the stage's own, ``seed_<seed>/<stage>`` (a model in a sub-folder of
  it: EA-Adam's merged models), never above it (an upstream stage's, which a later run
  may have rewritten); None for a stage finished before stages recorded it (the run's
  ``config.json`` then stands)."""
  top = os.path.abspath(os.path.join(workdir, f"seed_{seed}", stage))
  folder = os.path.dirname(os.path.abspath(path))
  while folder == top or folder.startswith(top + os.sep):
    candidate = os.path.join(folder, CONFIG_JSON)
    if os.path.exists(candidate):
      try:
        with open(candidate) as f:
          return ml_collections.ConfigDict(json.load(f))
      except (OSError, ValueError) as e:
        raise RunError(f"cannot read {candidate}: {e}",
                       hint="delete it to build the model from the run's config.json") from None
    folder = os.path.dirname(folder)
  return None


def run_seeds(workdir: str) -> list[int]:
  """The seeds of run ``workdir`` (its ``seed_<n>`` folders), ascending."""
  seeds = sorted(int(d[len("seed_"):]) for d in os.listdir(workdir)
                 if d.startswith("seed_") and d[len("seed_"):].isdigit())
  if not seeds:
    raise RunError(f"no seed_<n> folders in {workdir}: the run has not trained anything yet")
  return seeds


def family(name: str) -> str:
  """The ``config.methods`` entry that trains model ``name`` ('expert_<d>': oracle)."""
  from fdjax import methods

  if name.startswith("expert_"):
    return "oracle"
  return next(m.name for m in methods.METHODS.values() if name in m.models)


def available_models(workdir: str, seed: int, config=None) -> list[str]:
  """Names of the models of ``workdir``'s seed ``seed`` whose stage has finished; with
  the run's ``config``, each looked for where that run keeps it (``Loadable.stage_in``:
  a restoration run's one soup answers to every ModelSoups name)."""
  from fdjax import methods

  def stage(name, entry):
    if config is None:
      return entry.stage
    try:
      return entry.stage_in(name, config)
    except ModelNotInRunError:
      return None

  seed_dir = os.path.join(workdir, f"seed_{seed}")
  stages = {n: stage(n, entry) for n, entry in methods.loadables().items()}
  names = [n for n, s in stages.items()
           if s is not None and variables_exist(os.path.join(seed_dir, s, "variables"))]
  experts = os.path.join(seed_dir, "experts")
  if os.path.isdir(experts):
    names += [f"expert_{d}" for d in sorted(os.listdir(experts))
              if variables_exist(os.path.join(experts, d, "variables"))]
  return sorted(names)


def model_path(workdir: str, name: str, seed: int, config) -> str:
  """``<workdir>/seed_<seed>/<stage>/variables`` of model ``name``, checked to exist.

  Raises ``UnknownModelError``, ``StageNotFinishedError`` (the stage's folder exists, or
  the run's ``config.methods`` includes its method) or ``ModelNotInRunError``."""
  from fdjax import methods

  try:
    entry = methods.loadable(name)
  except ValueError as e:
    have = available_models(workdir, seed, config)
    message = str(e)
    refused = {k for m in methods.METHODS.values() for k in m.refused}
    if not name.startswith("expert_") and name not in refused:
      # a misspelt name: the near ones of the run's own models, not every method's names
      near = difflib.get_close_matches(name.lower(), have, n=2) or difflib.get_close_matches(
          name.lower(), list(methods.loadables()), n=2)
      # else every loadable name (``str(e)``): the run's own list may be empty
      message = (f"no single model for method {name!r} (did you mean "
                 f"{' or '.join(map(repr, near))}?)" if near else message)
    raise UnknownModelError(f"{message}; run {workdir} (seed {seed}) has "
                            f"{', '.join(have) or 'no finished model'}") from None
  owner = family(name)
  stage = entry.stage_in(name, config)
  stage_dir = os.path.join(workdir, f"seed_{seed}", stage)
  path = os.path.join(stage_dir, "variables")
  if variables_exist(path):
    return path
  planned = owner in parse_list(config.get("methods", "")) and (
      not name.startswith("expert_")
      or name[len("expert_"):] in parse_list(config.get("degradations", "")))
  hint = rerun_command(workdir, config, owner)
  if os.path.isdir(stage_dir) or planned:
    raise StageNotFinishedError(
        f"model {name!r} of run {workdir} (seed {seed}) is not finished: stage "
        f"{stage!r} has no saved variables at {path}",
        hint=f"finish it with {hint} (finished stages are reused; an interrupted stage "
             "resumes from its last checkpoint)")
  have = available_models(workdir, seed, config)
  degradations = parse_list(config.get("degradations", ""))
  if name.startswith("expert_") and owner in parse_list(config.get("methods", "")):
    raise ModelNotInRunError(   # Oracle ran: the run has no such degradation
        f"run {workdir} (seed {seed}) has no model {name!r}: its degradations are "
        f"{', '.join(degradations)}; finished models: {', '.join(have) or 'none'}",
        hint=f"load one of {', '.join('expert_' + d for d in degradations)}")
  raise ModelNotInRunError(
      f"run {workdir} (seed {seed}) has no model {name!r}: its config.methods is "
      f"{config.get('methods', '')!r}; finished models: {', '.join(have) or 'none'}",
      hint=f"train it with {hint}")


def rerun_command(workdir: str, config, family: str) -> str:
  """The command that trains method ``family`` in run ``workdir`` and keeps the run's
  other methods (a run of fewer methods writes a results table of those alone): the
  command recorded in its ``run.json`` (``fdjax.main`` records it), its
  ``--config.methods`` and ``--workdir`` replaced and its ``--time_limit`` left out (the
  run it stopped is to be finished); without one, a placeholder for the config file."""
  methods = parse_list(config.get("methods", ""))
  listed = "--config.methods=" + ",".join(methods + [family] * (family not in methods))
  try:
    with open(os.path.join(workdir, "run.json")) as f:
      command = json.load(f).get("command")
  except (OSError, ValueError, AttributeError):
    command = None
  try:
    words = shlex.split(command) if isinstance(command, str) else None
  except ValueError:   # a hand-edited run.json with unbalanced quotes
    words = None
  if not words:
    return RERUN.format(run=shlex.quote(workdir), methods=listed)
  args, skip, replaced = [], False, ("--workdir", "--config.methods", "--time_limit")
  for arg in words:
    if skip:
      skip = False
    elif arg in replaced:
      skip = True   # its value is the next word
    elif not arg.startswith(tuple(f"{flag}=" for flag in replaced)):
      args.append(arg)
  return shlex.join(args + [f"--workdir={workdir}", listed])


def load_model(workdir: str, method: str = "fusiondistill", seed: int | None = None,
               k: int | None = None) -> LoadedModel:
  """Model, variables and a jitted ``predict(images_uint8 [B,H,W,3]) -> outputs``.

  ``method``: a loadable name of ``fdjax.methods`` ('clean', 'expert_<degradation>',
  'fusiondistill', 'modelsoups_paper', ...) or the row of the results table that shows it
  ('FusionDistill', 'Vanilla FT', 'FusionDistill-MoE (K=1)': ``methods.model_name``).
  ``seed``: default the smallest. ``k``: the
  top-K routing of 'fusiondistill_moe' (default: the K it was trained with).
  """
  from fdjax import methods

  try:   # a row of the results table as well as a model name
    method, k = methods.model_name(method, k)
  except ValueError as e:
    raise UnknownModelError(str(e)) from None
  config, run_info = read_run(workdir)
  if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral)):
    raise UnknownModelError(f"k must be an integer (the MoE student's top-K), got {k!r}")
  seeds = run_seeds(workdir)
  if seed is None:
    seed = seeds[0]
  elif isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
    raise RunError(f"seed must be an integer, one of the run's seeds "
                   f"{', '.join(map(str, seeds))}; got {seed!r}")
  elif seed not in seeds:
    raise RunError(f"run {workdir} has no seed {seed}; its seeds: "
                   f"{', '.join(map(str, seeds))}")
  path = model_path(workdir, method, seed, config)
  entry = methods.loadable(method)
  config = recorded_config(workdir, seed, path, entry.stage) or config
  if k is not None and entry.build is None:
    raise UnknownModelError(f"k={k}: only the MoE student (fusiondistill_moe) routes "
                            f"top-K; {method} has no K")
  experts = len(parse_list(config.get("degradations", "")))
  if k is not None and not 1 <= k <= experts:
    raise UnknownModelError(f"k={k}: the run's MoE student has {experts} experts "
                            f"(one per degradation), so k must be in 1..{experts}")
  data_spec = tasks.DataSpec(tuple(run_info["image_shape"]), run_info.get("num_classes", 0))
  task = tasks.from_config(config)
  model = (entry.build(config, data_spec, k) if entry.build
           else task.build_model(config, data_spec))
  template = jax.eval_shape(lambda: init_variables(model, jax.random.key(0),
                                                   data_spec.image_shape))
  # on the default device once: a host (numpy) tree is copied to the device at every
  # call of a jitted function, here every predict (fdjax.eval.metric.on_devices)
  variables = on_devices(load_variables(path, template))
  predict = jit_clean(predictor(task, model))  # memoised: equal models share compilations
  # A classifier takes the run's image size only (a GAP head would answer any size);
  # a restorer any size (the task's forward pads it to the network's stride).
  size = None if hasattr(task, "identity") else tuple(run_info["image_shape"][:2])
  return LoadedModel(model, variables,
                     lambda images: predict(variables, checked_batch(images, size)), config,
                     path, task, run_info, seed, method)
