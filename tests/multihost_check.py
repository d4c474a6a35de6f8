"""One process of the multi-host check (see test_multihost.py).

    python tests/multihost_check.py single PORT WORKDIR   # 1 process, 4 simulated devices
    python tests/multihost_check.py 0 PORT WORKDIR        # process 0 of 2 (2 devices each)
    python tests/multihost_check.py 1 PORT WORKDIR        # process 1 of 2

Trains a tiny conv + BatchNorm net on 48 synthetic 16x16 images (brightness = class)
with the engine (``make_train_step`` + ``fit``), global batch 8: one step
(``WORKDIR/<run>/first``); 12 steps over 2 epochs uninterrupted (``WORKDIR/<run>/full``);
the same 12 stopped after 8 steps and resumed from the step-8 checkpoint
(``WORKDIR/<run>/resumed``); in the two-process run, the same 12 stopped by a SIGTERM
that only process 1 receives, during step 2, and resumed (``WORKDIR/multi/preempted``:
both processes must stop at the step JAX's preemption service agrees on), and stopped
by a time limit of 0 s (``WORKDIR/multi/timed``). Also checks that a workdir not shared
by the processes is refused, that a write failing in process 0 stops both, that
processes given different configs are refused (``distributed.check_same``), that each
process built only its own rows of the first global batch and that those are the rows a one-process run takes, and the sharded test
accuracy against an unbatched forward pass, and places a population state holding NaN
(EA-Adam's fitness before its first evolutionary epoch) on the mesh. Writes ``WORKDIR/<run>.<process>.npz``
(every parameter and BatchNorm statistic of the runs, the accuracy, where the stopped
runs stopped) and prints ``OK``.
"""

import os
import signal
import sys
import time

role, port, workdir = sys.argv[1], sys.argv[2], sys.argv[3]
assert "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

from fdjax import distributed  # noqa: E402

if role != "single":
  assert distributed.initialize("on", f"localhost:{port}", num_processes=2,
                                process_id=int(role))

import flax.linen as nn  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from fdjax.config import optimizer_config  # noqa: E402
from fdjax.data import ImageSet, batching  # noqa: E402
from fdjax.errors import ConfigError  # noqa: E402
from fdjax.eval.metric import jit_clean, predictor, split_scores  # noqa: E402
from fdjax.tasks import Augment, ClassificationTask  # noqa: E402
from fdjax.train import (Checkpointer, LoopConfig, create_train_state,  # noqa: E402
                         data_sharding, fit, init_variables, make_mesh, make_optimizer,
                         make_train_step)
from fdjax.train.objectives import supervised_loss  # noqa: E402
from fdjax.train.stop import RunStopped, armed  # noqa: E402

assert jax.device_count() == 4 and jax.process_count() == (1 if role == "single" else 2)
distributed.check_shared_directory(workdir)
if role != "single":   # a "workdir" that differs per host is refused, in every process
  try:
    distributed.check_shared_directory(os.path.join(workdir, f"local{role}"))
    raise AssertionError("a per-process directory passed check_shared_directory")
  except ConfigError as e:
    assert "not shared by all 2 processes: process(es) 1 do not see" in str(e), e
  # A write that fails in process 0 (a workdir it cannot make, a workdir already locked)
  # stops every process at once; process 1 used to wait at the next collective until
  # JAX's shutdown barrier aborted it, five minutes later.
  try:
    distributed.write_once(lambda: 1 / 0, "a failing write")
    raise AssertionError("write_once went on after process 0's write failed")
  except ZeroDivisionError:
    assert role == "0"
  except ConfigError as e:
    assert role == "1" and "process 0 failed at 'a failing write'" in str(e), e
  # Hosts started with other settings are refused in every process; the same pass.
  distributed.check_same("the config", "lr=0.1")
  try:
    distributed.check_same("the config", f"lr=0.{role}")
    raise AssertionError("processes with different configs passed check_same")
  except ConfigError as e:
    assert "the 2 processes disagree on the config: process(es) 1 differ" in str(e), e
run = "single" if role == "single" else "multi"
BATCH, SEED = 8, 3



def synthetic(n: int, seed: int) -> ImageSet:
  """uint8 ``[n, 16, 16, 3]`` noise 0..63 plus 19 x label (label int32 0..9)."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, n).astype(np.int32)
  noise = rng.integers(0, 64, (n, 16, 16, 3))
  return ImageSet((noise + 19 * labels[:, None, None, None]).astype(np.uint8), labels)


train, test = synthetic(48, 0), synthetic(20, 1)   # 20 test images: the last batch is padded
mesh = make_mesh()

# The first global batch: this process gathers only its devices' rows; the whole batch is
# the one a one-process run takes (rows order[0:8] of numpy's own permutation).
batch = next(batching.train_batches(train, BATCH, seed=SEED, epoch=0,
                                    sharding=data_sharding(mesh)))
rows = batching.process_rows(data_sharding(mesh), BATCH)
assert len(rows) == BATCH // jax.process_count(), rows
order = np.random.default_rng((SEED, 0)).permutation(len(train))
expected = train.images[order[:BATCH]]
np.testing.assert_array_equal(multihost_utils.process_allgather(batch["image"], tiled=True),
                              expected)
for shard in batch["image"].addressable_shards:
  np.testing.assert_array_equal(np.asarray(shard.data), expected[shard.index])


# EA-Adam's population state holds NaN fitness until its first evolutionary epoch: placed
# on the mesh in every process (jax.device_put compares each value across the processes
# first, and NaN never equals itself: the ea_adam stage died at its start).
from fdjax.population.evolution import init_evolution  # noqa: E402
from fdjax.population.state import create_population_state  # noqa: E402

evolution = init_evolution(jax.random.PRNGKey(1), np.eye(2, dtype=np.float32)[[0, 1, 1]],
                           np.ones(3, bool))
population = create_population_state({"params": {"w": np.zeros((3, 4), np.float32)},
                                      "batch_stats": {}}, optax.sgd(0.1),
                                     jax.random.PRNGKey(2), evolution, mesh)
for shard in population.evolution.fitness.addressable_shards:
  assert shard.data.shape == (3, 2) and np.isnan(np.asarray(shard.data)).all()
assert population.params["w"].sharding.is_fully_replicated

# The validation's fixed-key degradations (EA-Adam's fitness, epoch selection) feed the
# predictor, whose jit takes the batch split over the mesh: with several processes it
# refuses a global array placed otherwise (plain jax.jit left one degradation's output
# replicated in a two-process EA-Adam run, one device per process), so the transform
# keeps the batch's sharding.
import types  # noqa: E402

import ml_collections  # noqa: E402

from fdjax.degradations.plan import LevelPlan  # noqa: E402
from fdjax.study.fixed_keys import fixed_key_transform  # noqa: E402

transform = fixed_key_transform(
    types.SimpleNamespace(config=ml_collections.ConfigDict({"eval": {"seed": 0}}), mesh=mesh),
    LevelPlan(("jpeg",)).sampler("jpeg"))
degraded = transform(0, batch["image"])
assert degraded.sharding.is_equivalent_to(data_sharding(mesh), degraded.ndim), degraded.sharding


class TinyNet(nn.Module):
  """Normalised ``[B, 16, 16, 3]`` -> ``(logits [B, 10], features [B, 8])``."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(8, (3, 3), strides=(2, 2))(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    features = x.mean(axis=(1, 2))
    return nn.Dense(10)(features), features


model = TinyNet()
task = ClassificationTask("unit", Augment(flip=True, crop=True, pad=2, cutout=False))
tx, _ = make_optimizer(optimizer_config("sgd", 0.1), epochs=2, steps_per_epoch=6)
# Initial weights drawn by numpy (N(0, 0.3^2)) into the shapes init_variables gives: jax's
# initialisers would cost seconds of XLA:CPU compilation (erf_inv) in every process.
shapes = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), (16, 16, 3)))
draw = np.random.default_rng(0)
variables = {"params": jax.tree.map(lambda s: draw.normal(0, 0.3, s.shape).astype(s.dtype),
                                    shapes["params"]),
             "batch_stats": {"BatchNorm_0": {"mean": np.zeros(8, np.float32),
                                             "var": np.ones(8, np.float32)}}}
step = make_train_step(supervised_loss(model, task), tx, mesh)


def train_run(name: str, max_steps: int = 0, train_step=step):
  state = create_train_state(variables, tx, jax.random.PRNGKey(SEED), mesh)
  loop = LoopConfig(epochs=2, batch_size=BATCH, seed=SEED, log_every_steps=4,
                    checkpoint_every_steps=4, max_steps=max_steps)
  return fit(state, train_step, train, loop=loop, mesh=mesh, name=name,
             workdir=os.path.join(workdir, run, name))


SLOW_STEP_S = 2.0   # seconds added to each step once a stop is requested (up to 20 s in all)


def sigterm_on_process_1(state, batch, frozen):
  """``step``; process 1 sends itself SIGTERM during step 2, and from then on every step
  takes SLOW_STEP_S more: JAX's preemption service agrees on a step about a second later
  on an idle machine, and under a loaded CI machine's two test workers it once needed
  more than the 5 s that ten steps of 0.5 s gave it."""
  sigterm_on_process_1.calls += 1
  if sigterm_on_process_1.calls == 2 and jax.process_index() == 1:
    os.kill(os.getpid(), signal.SIGTERM)
  if sigterm_on_process_1.calls >= 2:
    time.sleep(SLOW_STEP_S)
  return step(state, batch, frozen)


sigterm_on_process_1.calls = 0


first = train_run("first", max_steps=1)
full = train_run("full")
stopped = train_run("resumed", max_steps=8)
assert int(stopped.step) == 8
resumed = train_run("resumed")   # a fresh start state: fit resumes from the step-8 checkpoint
assert int(resumed.step) == int(full.step) == 12
out = {}
if run == "multi":   # SIGTERM on one process: both save the same step and stop (fdjax.train.stop)
  try:
    with armed():
      train_run("preempted", train_step=sigterm_on_process_1)
    raise AssertionError("the SIGTERM of process 1 did not stop the run")
  except RunStopped as stopped:
    out["preempted_step"] = np.int64(stopped.step)
    out["preempted_reason"] = np.str_(stopped.reason)
    out["preempted_saved"] = np.int64(Checkpointer(stopped.checkpoint).latest_step())
  preempted = train_run("preempted")   # resumed from the agreed step's checkpoint
  try:   # the time limit: process 0's clock, turned into a SIGTERM to itself
    with armed(time_limit_s=0.0):
      train_run("timed", train_step=lambda *a: (time.sleep(SLOW_STEP_S), step(*a))[1])
    raise AssertionError("the time limit did not stop the run")
  except RunStopped as stopped:
    out["timed_step"], out["timed_reason"] = np.int64(stopped.step), np.str_(stopped.reason)
  assert int(preempted.step) == 12

accuracy = split_scores(task, jit_clean(predictor(task, model), mesh),
                        {"params": full.params, "batch_stats": full.batch_stats}, test,
                        batch_size=BATCH, mesh=mesh)["accuracy"]
# Reference: one unbatched forward pass on the host's copy of the (replicated) weights.
logits, _ = model.apply(jax.device_get({"params": full.params, "batch_stats": full.batch_stats}),
                        task.model_input(test.images), train=False)
reference = float(np.mean(np.argmax(np.asarray(logits), -1) == test.labels))
assert abs(accuracy - reference) < 1e-6, (accuracy, reference)
out["accuracy"] = np.float64(accuracy)
states = [("first", first), ("full", full), ("resumed", resumed)]
for prefix, state in states + ([("preempted", preempted)] if run == "multi" else []):
  for path, leaf in jax.tree_util.tree_flatten_with_path(
      {"params": state.params, "batch_stats": state.batch_stats})[0]:
    out[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)   # replicated: any process
np.savez(os.path.join(workdir, f"{run}.{jax.process_index()}.npz"), **out)
distributed.barrier("multihost_check done")
print("OK", run, jax.process_index(), f"accuracy {accuracy:.4f}")
