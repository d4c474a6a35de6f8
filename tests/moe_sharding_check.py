"""Run with 8 simulated CPU devices (see test_moe.py).

On a ('data', 'expert') mesh of shape (2, 4), with the stacked experts sharded over
'expert' (``expert_sharding``) and the batch over 'data', the MoE student's forward
(dense dispatch, sparse per-image gather, sparse capacity buffers) and its
FusionDistill-loss training step equals the unsharded one: the generic
``make_train_step`` on the 2-D mesh with ``state_sharding=expert_sharding(mesh, state)``
against the same step on 1 device.

``make_train_step`` with the state left replicated on the 2-D mesh is refused (checked
here): with jax/jaxlib 0.10.2 on CPU, XLA's SPMD partitioner gives wrong kernel
gradients for the vmapped experts' grouped convolutions when the batch is sharded over
'data' but replicated over 'expert' and the kernels are replicated.
"""

import os
import sys

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from fdjax.distill import fusiondistill_loss  # noqa: E402
from fdjax.tasks import NO_AUGMENT, ClassificationTask  # noqa: E402
from fdjax.models import cifar_resnet  # noqa: E402
from fdjax.moe import expert_mesh, expert_sharding, moe_resnet, moe_variables  # noqa: E402
from random_weights import random_variables  # noqa: E402  (tests/ is sys.path[0])
from fdjax.train import (create_train_state, data_sharding, make_mesh,  # noqa: E402
                         make_train_step, replicated)
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
loss_fn = fusiondistill_loss(model, ClassificationTask("unit", NO_AUGMENT),
                             degrade=lambda k, x: x, num_experts=E, teacher_model=dense,
                             aux_loss_weight=1e-4)
batch = {"image": jnp.asarray(rng.integers(0, 256, (8, *SHAPE), dtype=np.uint8)),
         "label": jnp.asarray(rng.integers(0, 3, 8), jnp.int32)}
frozen = stack_trees(experts)


tx = optax.sgd(1.0)


def one_sgd_step(mesh, **kwargs):
  """One generic ``make_train_step`` SGD step (lr 1: new params = params - grads)."""
  state = create_train_state(variables, tx, jax.random.PRNGKey(0), make_mesh(jax.devices()[:1]))
  sharding = kwargs.get("state_sharding")
  state = jax.device_put(state, sharding if sharding is not None else replicated(mesh))
  step = make_train_step(loss_fn, tx, mesh, donate=False, **kwargs)
  return step(state, jax.device_put(batch, data_sharding(mesh)), frozen)


# The reference: 1 device. Then the same step on the (data 2, expert 4) mesh with the
# state's experts sharded over 'expert', passed through make_train_step's state_sharding.
one_device = make_mesh(jax.devices()[:1])
reference_state, reference_metrics = one_sgd_step(one_device)
assert "aux_loss" in reference_metrics and float(reference_metrics["finite"]) == 1.0
template = create_train_state(variables, tx, jax.random.PRNGKey(0))
new_state, metrics = one_sgd_step(mesh, state_sharding=expert_sharding(mesh, template))
kernel = new_state.params["stage3_moe"]["experts"]["block0"]["Conv_1"]["kernel"]
assert kernel.sharding.spec == P("expert"), kernel.sharding
old_kernel = variables["params"]["stage3_moe"]["experts"]["block0"]["Conv_1"]["kernel"]
assert float(jnp.abs(kernel - old_kernel).sum()) > 0                  # the experts learn
assert float(metrics["finite"]) == 1.0
np.testing.assert_allclose(float(metrics["loss"]), float(reference_metrics["loss"]), rtol=1e-5)
for a, b in zip(jax.tree.leaves(jax.device_get(reference_state)),
                jax.tree.leaves(jax.device_get(new_state))):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)

# Left replicated on that mesh (the XLA wrong-gradient case), make_train_step refuses.
try:
  make_train_step(loss_fn, tx, mesh)
  raise AssertionError("make_train_step accepted a replicated state on the (data, expert) mesh")
except ValueError as e:
  assert "expert_sharding(mesh, state)" in str(e), e
print(f"OK expert-sharded MoE forward/train step equal unsharded (max logit diff {worst:.3g}), "
      f"loss {float(metrics['loss']):.4f}")
sys.exit(0)
