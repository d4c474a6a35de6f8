"""What every stage of one run (one seed) shares: config, workdir, data, mesh, task,
level plan and the dense model."""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections

from fdjax import data as data_lib
from fdjax import tasks
from fdjax.degradations.plan import LevelPlan
from fdjax.train import init_variables, make_mesh


@dataclasses.dataclass
class RunContext:
  """One seed's run. ``study`` (optional) receives training progress for the study line."""

  config: ml_collections.ConfigDict
  workdir: str
  seed: int
  dataset: data_lib.Dataset
  mesh: jax.sharding.Mesh
  task: tasks.Task
  plan: LevelPlan
  model: object
  study: object = None
  # Compiled train steps shared by stages (``Recipe.shared_step``), per run.
  steps: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def degradations(self) -> tuple[str, ...]:
    return self.plan.names

  @property
  def data_spec(self) -> tasks.DataSpec:
    return tasks.DataSpec(self.dataset.image_shape, self.dataset.num_classes)

  def stage_dir(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def template_variables(self, model=None) -> dict:
    """Shapes and dtypes (no values) of ``model``'s variables (default: the dense model)."""
    model = model or self.model
    return jax.eval_shape(lambda: init_variables(model, jax.random.key(0),
                                                 self.dataset.image_shape))


def load_dataset(config: ml_collections.ConfigDict, seed: int) -> data_lib.Dataset:
  """The task's data set (``task.load_data``; the validation split depends on ``seed``)."""
  return tasks.from_config(config).load_data(config, seed)


def make_context(config: ml_collections.ConfigDict, workdir: str, seed: int | None = None,
                 dataset: data_lib.Dataset | None = None, study=None) -> RunContext:
  """Loads the data set (unless given) and builds task, level plan, model and mesh."""
  seed = config.seed if seed is None else seed
  dataset = dataset or load_dataset(config, seed)
  os.makedirs(workdir, exist_ok=True)
  task = tasks.from_config(config)
  model = task.build_model(config, tasks.DataSpec(dataset.image_shape, dataset.num_classes))
  return RunContext(config, workdir, seed, dataset, make_mesh(), task,
                    LevelPlan.from_config(config), model, study)
