"""Run with 8 simulated CPU devices (see test_moe.py).

On a ('data', 'expert') mesh of shape (2, 4), with the stacked experts sharded over
'expert' (``expert_sharding``) and the batch over 'data', the MoE student's forward
(dense dispatch, sparse per-image gather, sparse capacity buffers) and its
FusionDistill-loss gradients equal the unsharded ones (the reference: one generic
``make_train_step`` SGD step on 1 device).

Not done here, on purpose: ``make_train_step`` (replicated state) on the 2-D mesh.
With jax/jaxlib 0.10.2 on CPU, XLA's SPMD partitioner gives wrong kernel gradients
for the vmapped experts' grouped convolutions when the batch is sharded over 'data'
but replicated over 'expert' and the kernels are replicated; shard the experts over
'expert' (as here) or use the 1-D data mesh.
"""

import os
import sys

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from fdjax.distill import fusiondistill_loss  # noqa: E402
from fdjax.models import cifar_resnet  # noqa: E402
from fdjax.moe import expert_mesh, expert_sharding, moe_resnet, moe_variables  # noqa: E402
from random_weights import random_variables  # noqa: E402  (tests/ is sys.path[0])
from fdjax.train import (create_train_state, data_sharding, make_mesh,  # noqa: E402
                         make_train_step)
from fdjax.trees import stack_trees  # noqa: E402

assert jax.device_count() == 8, jax.devices()
SHAPE, E = (8, 8, 3), 4


dense = cifar_resnet(8, 3)
fused = random_variables(dense, 0, SHAPE)
experts = [random_variables(dense, i, SHAPE) for i in range(1, E + 1)]
mesh = expert_mesh(E)
assert dict(mesh.shape) == {"data": 2, "expert": 4}, mesh.shape
rng = np.random.default_rng(0)
images = jnp.asarray(rng.normal(size=(8, *SHAPE)), jnp.float32)
on_data = NamedSharding(mesh, P("data"))


def forward(model, variables, x):
  return model.apply(variables, x)[0]


forward = jax.jit(forward, static_argnums=0)
model = moe_resnet(8, 3, num_experts=E, k=2, expert_loop="vmap")  # expert-parallel layout
variables = moe_variables(model, fused, experts, jax.random.key(1, impl="rbg"), SHAPE)
variables["params"]["stage3_moe"]["router"]["expert_prompts"] *= 100.0   # decisive routing
reference = np.asarray(forward(model, variables, images))
sharded = jax.device_put(variables, expert_sharding(mesh, variables))
kernel = sharded["params"]["stage3_moe"]["experts"]["block0"]["Conv_0"]["kernel"]
assert kernel.sharding.spec == P("expert"), kernel.sharding
assert kernel.addressable_shards[0].data.shape[0] == 1              # one expert per device
assert sharded["params"]["classifier"]["kernel"].sharding.is_fully_replicated
worst = 0.0
for kwargs in (dict(), dict(dispatch="sparse"), dict(dispatch="sparse", capacity_factor=2.0)):
  logits = forward(model.clone(**kwargs), sharded, jax.device_put(images, on_data))
  np.testing.assert_allclose(np.asarray(logits), reference, rtol=1e-5, atol=1e-5)
  worst = max(worst, float(np.max(np.abs(np.asarray(logits) - reference))))

# Gradients of the FusionDistill loss, experts sharded over 'expert', against the generic
# train step (plain SGD, lr 1: new params = params - grads) on 1 device.
no_augment = ml_collections.ConfigDict(dict(flip=False, crop=False, pad=4, cutout=False,
                                            cutout_size=16))
loss_fn = fusiondistill_loss(model, normalization="unit", augment_cfg=no_augment,
                             degrade=lambda k, x: x, num_experts=E, teacher_model=dense,
                             aux_loss_weight=1e-4)
batch = {"image": jnp.asarray(rng.integers(0, 256, (8, *SHAPE), dtype=np.uint8)),
         "label": jnp.asarray(rng.integers(0, 3, 8), jnp.int32)}
frozen = stack_trees(experts)


@jax.jit
def sharded_grads(params, batch_stats, batch, frozen):
  return jax.grad(lambda p: loss_fn(p, batch_stats, batch, jax.random.key(0), frozen)[0])(params)


grads = sharded_grads(sharded["params"], sharded["batch_stats"], jax.device_put(batch, on_data),
                      frozen)
g_kernel = grads["stage3_moe"]["experts"]["block0"]["Conv_1"]["kernel"]
assert float(jnp.abs(g_kernel).sum()) > 0
expected = jax.tree.map(lambda p, g: np.asarray(p) - np.asarray(g), variables["params"], grads)
tx = optax.sgd(1.0)
one_device = make_mesh(jax.devices()[:1])
state = create_train_state(variables, tx, jax.random.PRNGKey(0), one_device)
step = make_train_step(loss_fn, tx, one_device, donate=False)
new_state, metrics = step(state, jax.device_put(batch, data_sharding(one_device)), frozen)
assert "aux_loss" in metrics and float(metrics["finite"]) == 1.0
for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(jax.device_get(new_state.params))):
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
print(f"OK expert-sharded MoE forward/grad equal unsharded (max logit diff {worst:.3g}), "
      f"loss {float(metrics['loss']):.4f}")
sys.exit(0)
