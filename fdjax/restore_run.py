"""Use a finished run from your own code::

    import fdjax
    restored = fdjax.restore("runs/quickstart", "fusiondistill")
    logits = restored.predict(images_uint8)          # [B, H, W, 3] uint8 -> [B, C]

``restore`` reads the run's ``config.json`` to rebuild the model, loads the
orbax checkpoint of the method's stage and returns a jitted ``predict`` that
applies the model's own input normalisation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import jax
import ml_collections

from fdjax.train.variables_io import load_variables

# Method -> stage directory (relative to the seed's workdir) holding its variables.
STAGE_OF_METHOD = {
    "clean": "clean",
    "scratch": "scratch",
    "vanilla": "vanilla",
    "fusing": "fusing",
    "fusiondistill": "fusiondistill",
    "modelsoups": "fused/average",
    "modelsoups_paper": "fused/paper",
    "modelsoups_average": "fused/average",
    "modelsoups_reestimate": "fused/reestimate",
    "fusiondistill_moe": "fusiondistill_moe",
}


@dataclasses.dataclass
class Restored:
  """model: a Flax module; variables: {'params','batch_stats'}; predict: uint8 -> logits."""

  model: object
  variables: dict
  predict: Callable
  config: ml_collections.ConfigDict
  path: str


def stage_dir_for(method: str) -> str:
  if method.startswith("expert_"):
    return f"experts/{method[len('expert_'):]}"
  if method not in STAGE_OF_METHOD:
    valid = sorted(STAGE_OF_METHOD) + ["expert_<degradation>"]
    raise ValueError(f"no single model for method {method!r}; choose from {valid}")
  return STAGE_OF_METHOD[method]


def restore(workdir: str, method: str = "fusiondistill", seed: int | None = None,
            k: int | None = None) -> Restored:
  """Model, variables and a jitted ``predict(images_uint8 [B,H,W,3]) -> logits [B,C]``.

  ``method='fusiondistill_moe'`` restores the mixture-of-experts student with top-``k``
  routing (default: the K it was trained with).
  """
  from fdjax import stages
  from fdjax.models import normalize

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
  path = os.path.join(workdir, f"seed_{seed}", stage_dir_for(method), "variables")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"method {method!r} has no finished checkpoint at {path}")
  with open(os.path.join(workdir, "run.json")) as f:
    run_info = json.load(f)
  if method == "fusiondistill_moe":
    model = stages.moe_student(config, run_info["num_classes"], k or config.moe.train_k)
  else:
    model = stages.build_model(config, run_info["num_classes"])
  template = jax.eval_shape(lambda: stages.init_variables(
      model, jax.random.key(0), tuple(run_info["image_shape"])))
  variables = load_variables(path, template)
  normalization = config.data.normalization

  @jax.jit
  def _predict(variables, images):
    return model.apply(variables, normalize(images, normalization), train=False)[0]

  return Restored(model, variables, lambda images: _predict(variables, images), config, path)
