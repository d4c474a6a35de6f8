"""Use a finished run from your own code::

    import fdjax
    loaded = fdjax.load_model("runs/quickstart", "fusiondistill")
    logits = loaded.predict(images_uint8)          # [B, H, W, 3] uint8 -> [B, C]

``load_model`` reads the run's ``config.json`` and ``run.json`` to rebuild the model,
loads the orbax checkpoint of the method's stage and returns a jitted ``predict`` that
applies the model's own input normalisation (the task's ``predict``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import jax
import ml_collections

from fdjax import tasks
from fdjax.train import init_variables
from fdjax.train.variables_io import load_variables


@dataclasses.dataclass
class LoadedModel:
  """model: a Flax module; variables: {'params','batch_stats'}; predict: uint8 -> outputs."""

  model: object
  variables: dict
  predict: Callable
  config: ml_collections.ConfigDict
  path: str


def load_model(workdir: str, method: str = "fusiondistill", seed: int | None = None,
               k: int | None = None) -> LoadedModel:
  """Model, variables and a jitted ``predict(images_uint8 [B,H,W,3]) -> outputs``.

  ``method``: a loadable name of ``fdjax.methods`` ('clean', 'expert_<degradation>',
  'fusiondistill', 'modelsoups_paper', ...). ``seed``: default the smallest. ``k``: the
  top-K routing of 'fusiondistill_moe' (default: the K it was trained with).
  """
  from fdjax import methods

  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{config_path} not found: is {workdir!r} an fdjax run directory?")
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if seed is None:
    seeds = sorted(int(d[len("seed_"):]) for d in os.listdir(workdir) if d.startswith("seed_"))
    if not seeds:
      raise FileNotFoundError(f"no seed_<n> directories in {workdir}")
    seed = seeds[0]
  entry = methods.loadable(method)
  path = os.path.join(workdir, f"seed_{seed}", entry.stage, "variables")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"method {method!r} has no finished checkpoint at {path}")
  with open(os.path.join(workdir, "run.json")) as f:
    run_info = json.load(f)
  data_spec = tasks.DataSpec(tuple(run_info["image_shape"]), run_info["num_classes"])
  task = tasks.from_config(config)
  model = (entry.build(config, data_spec, k) if entry.build
           else task.build_model(config, data_spec))
  template = jax.eval_shape(lambda: init_variables(model, jax.random.key(0),
                                                   data_spec.image_shape))
  variables = load_variables(path, template)
  predict = jax.jit(lambda v, images: task.predict(model, v, images))
  return LoadedModel(model, variables, lambda images: predict(variables, images), config, path)
