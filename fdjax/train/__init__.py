"""Training engine: one TrainState, one jitted step factory, one loop, orbax checkpoints."""

from fdjax.train.checkpoint import (CheckpointError, Checkpointer, CheckpointReadError,
                                   CorruptCheckpointError, IncompatibleCheckpointError)
from fdjax.train.loop import LoopConfig, NonFiniteLossError, fit
from fdjax.train.mesh import DATA_AXIS, data_sharding, make_mesh, replicated
from fdjax.train.optim import make_optimizer, make_schedule
from fdjax.train.progress import StudyProgress
from fdjax.train.state import TrainState, create_train_state, init_variables
from fdjax.train.step import check_state_sharding, make_train_step, step_key

__all__ = [
    "CheckpointError", "Checkpointer", "CheckpointReadError", "CorruptCheckpointError", "DATA_AXIS",
    "IncompatibleCheckpointError", "LoopConfig", "NonFiniteLossError", "StudyProgress",
    "TrainState", "check_state_sharding", "create_train_state", "data_sharding", "fit",
    "init_variables", "make_mesh", "make_optimizer", "make_schedule", "make_train_step",
    "replicated", "step_key",
]
