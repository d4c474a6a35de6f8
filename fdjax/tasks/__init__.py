"""Tasks: what a study's models output, how they are trained and scored.

    task = fdjax.tasks.from_config(config)     # config.task: 'classification' or 'restoration'
    logits = task.predict(model, variables, images_uint8)

See ``fdjax.tasks.base`` for the interface. A new task is a new module here and one
entry in ``TASKS``.
"""

from fdjax.tasks.base import DataSpec, MetricSpec, Task
from fdjax.tasks.classification import NO_AUGMENT, Augment, ClassificationTask
from fdjax.tasks.restoration import RestorationTask

TASKS = {"classification": ClassificationTask, "restoration": RestorationTask}


def from_config(config) -> Task:
  """The task named by ``config.task`` (default 'classification'), built from ``config``."""
  name = config.get("task", "classification")
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
  return TASKS[name].from_config(config)


__all__ = ["NO_AUGMENT", "TASKS", "Augment", "ClassificationTask", "DataSpec", "MetricSpec",
           "RestorationTask", "Task", "from_config"]
