"""Run with 8 simulated CPU devices (see test_sharding.py): a train step sharded over
8 devices equals the same step on 1 device; the benchmarks' stepper moves no data in a
timed step; the fixed-key validation transform takes a host batch of any size."""

import os
import re
import sys

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from fdjax.config import optimizer_config  # noqa: E402
from fdjax.models import cifar_resnet, resnet  # noqa: E402
from fdjax.models.materialize import materialize  # noqa: E402
from fdjax.train import (create_train_state, data_sharding, init_variables, make_mesh,  # noqa: E402
                         make_optimizer, make_train_step)
from fdjax.tasks import Augment, ClassificationTask  # noqa: E402
from fdjax.train.objectives import supervised_loss  # noqa: E402  # noqa: E402

assert jax.device_count() == 8, jax.devices()
model = cifar_resnet(8, 10)
task = ClassificationTask("unit", Augment(flip=True, crop=True, pad=4, cutout=True, cutout_size=8))
loss_fn = supervised_loss(model, task)
tx, _ = make_optimizer(optimizer_config("sgd", 0.1), epochs=1, steps_per_epoch=1)
variables = init_variables(model, jax.random.key(0), (32, 32, 3))
rng = np.random.default_rng(0)
batches = [{"image": rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
            "label": rng.integers(0, 10, 16).astype(np.int32)} for _ in range(2)]

results = []
for devices in (jax.devices()[:1], jax.devices()):
  mesh = make_mesh(devices)
  state = create_train_state(variables, tx, jax.random.PRNGKey(0), mesh)
  step = make_train_step(loss_fn, tx, mesh, donate=False)
  for batch in batches:
    placed = jax.device_put({k: jnp.asarray(v) for k, v in batch.items()}, data_sharding(mesh))
    state, metrics = step(state, placed)
  if len(devices) == 8:
    assert len(placed["image"].sharding.device_set) == 8
    assert placed["image"].addressable_shards[0].data.shape[0] == 2
    assert state.params["classifier"]["kernel"].sharding.is_fully_replicated
  results.append((jax.device_get(state), float(metrics["loss"])))

# create_train_state copies: the donating step must leave the caller's arrays alive on
# 8 devices too (an expert's init is also its frozen teacher; device_put's may_alias=False
# alone reused the caller's buffer as device 0's shard). (Not read on the host before the
# step: on CPU that view pins the buffer, and a pinned buffer is copied, not donated.)
fresh = {"params": {"w": jnp.arange(64.0)}, "batch_stats": {}}   # on device 0
mesh8 = make_mesh(jax.devices())
donating = make_train_step(lambda p, s, b, k: (jnp.sum(p["w"] ** 2), (s, {})), tx, mesh8)
donated, _ = donating(create_train_state(fresh, tx, jax.random.PRNGKey(0), mesh8), placed)
assert not fresh["params"]["w"].is_deleted(), "the caller's variables were donated"
np.testing.assert_array_equal(np.asarray(fresh["params"]["w"]), np.arange(64.0))

(one, loss_one), (eight, loss_eight) = results
assert abs(loss_one - loss_eight) < 1e-4, (loss_one, loss_eight)
worst = 0.0
for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  worst = max(worst, float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))))


def collectives(materialize_fn):
  """Counts of all-reduces and conditionals in the compiled 8-device gradient program,
  with ``fdjax.models.resnet.materialize`` replaced by ``materialize_fn``."""
  saved, resnet.materialize = resnet.materialize, materialize_fn
  try:
    grad = jax.jit(jax.grad(lambda p, b: loss_fn(p, state.batch_stats, b, jax.random.key(1))[0]))
    text = grad.lower(state.params, placed).compile().as_text()
  finally:
    resnet.materialize = saved
  return (len(re.findall(r" all-reduce(?:-start)?\(", text)),
          len(re.findall(r" conditional\(", text)))


# The residual-stream cut (fdjax.models.materialize) reads its predicate from a replicated
# parameter: it adds conditionals but no collective to a batch-sharded step.
with_cut, without_cut = collectives(materialize), collectives(lambda x, **_: x)
assert with_cut[1] > 0 and without_cut[1] == 0, (with_cut, without_cut)
assert with_cut[0] == without_cut[0], ("all-reduces with / without the cut", with_cut, without_cut)
# The benchmarks' stepper places its batch on the mesh once: a timed step moves no data
# (it used to copy a default-placed batch across the 8 devices in every step).
from fdjax.bench.train_step import stepper  # noqa: E402

run = stepper(make_train_step(loss_fn, tx, mesh8), create_train_state(variables, tx,
              jax.random.PRNGKey(0), mesh8), {k: jnp.asarray(v) for k, v in batches[0].items()},
              mesh8)
run(1)   # compiles
with jax.transfer_guard("disallow"):
  run(2)

# Evaluation places the variables on the mesh once: a tree on one device (the stacked
# experts of the Ensemble row) was copied to the other 7 at every call of the predictor.
from fdjax.eval.metric import jit_clean, on_devices  # noqa: E402
from fdjax.trees import stack_trees  # noqa: E402

stacked = stack_trees([variables, variables])   # on device 0
ensemble = jit_clean(lambda v, x: jnp.sum(v["params"]["classifier"]["kernel"]) + x[:, 0, 0, 0],
                     mesh8)
on_mesh = on_devices(stacked, mesh8)
ensemble(on_mesh, placed["image"])   # compiles
with jax.transfer_guard("disallow"):
  ensemble(on_mesh, placed["image"])
  again = on_devices(on_mesh, mesh8)   # already laid out: the same arrays, nothing moves
  assert all(a is b for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(on_mesh)))

# EA-Adam's calibration degrades host batches of any size (13 validation tiles): the fixed-
# key transform must not split them over the 8 devices (it failed: 13 is not divisible).
import types  # noqa: E402

import ml_collections  # noqa: E402

from fdjax.degradations.plan import LevelPlan  # noqa: E402
from fdjax.study.fixed_keys import fixed_key_transform  # noqa: E402

transform = fixed_key_transform(
    types.SimpleNamespace(config=ml_collections.ConfigDict({"eval": {"seed": 0}}),
                          mesh=make_mesh()), LevelPlan(("awgn",)).sampler("awgn"))
assert transform(0, np.zeros((13, 8, 8, 3), np.uint8)).shape == (13, 8, 8, 3)
print(f"OK 1-device vs 8-device max abs diff {worst:.3g}")
sys.exit(0)
