"""Run with 8 simulated CPU devices (see test_population_step.py).

A population of 4 members on a ('data', 'population') mesh of shape (2, 4), members
sharded over 'population' (``population_sharding``) and the batch over 'data': two
population steps (vmapped members) equal the same steps on 1 device.
"""

import os
import sys

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from fdjax.population.gradients import population_grad_fn  # noqa: E402
from fdjax.population.objectives import share_losses  # noqa: E402
from fdjax.population.preferences import preference_vectors  # noqa: E402
from fdjax.population.state import (create_population_state, population_mesh,  # noqa: E402
                                    stack_members)
from fdjax.tasks import NO_AUGMENT, ClassificationTask  # noqa: E402
from fdjax.train import make_mesh  # noqa: E402
from population_sharded_training import train_population  # noqa: E402
from test_population_step import TinyNet  # noqa: E402  (tests/ is sys.path[0])

assert jax.device_count() == 8, jax.devices()
P, M = 4, 2
model, task = TinyNet(), ClassificationTask("unit", NO_AUGMENT)
init = jax.jit(lambda key: model.init(key, jnp.zeros((1, 8, 8, 3)), train=False))
members = stack_members([init(jax.random.PRNGKey(i)) for i in range(P)])
rng = np.random.default_rng(0)
batches = [{"image": jnp.asarray(rng.integers(0, 256, (8, 8, 8, 3)), jnp.uint8),
            "label": jnp.asarray(rng.integers(0, 3, 8), jnp.int32)} for _ in range(2)]
loss_fn = share_losses(model, task, lambda key, images: images, M)
grad_fn = population_grad_fn(preference_vectors(P, M), loop="vmap")
tx = optax.adam(1e-2)


def train(mesh, sharded: bool):
  return train_population(
      lambda m: create_population_state(members, tx, jax.random.PRNGKey(3), None, m),
      loss_fn, tx, grad_fn, batches, mesh, sharded)


mesh = population_mesh(4)
assert dict(mesh.shape) == {"data": 2, "population": 4}, mesh.shape
sharded, metrics = train(mesh, True)
kernel = sharded.params["Conv_0"]["kernel"]
assert len({d.id for d in kernel.sharding.device_set}) == 8
assert kernel.addressable_shards[0].data.shape[0] == 1, "members split over 'population'"
single, _ = train(make_mesh(jax.devices()[:1]), False)
for a, b in zip(jax.tree.leaves(sharded.variables), jax.tree.leaves(single.variables)):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
print("population sharding OK", metrics["loss"].shape)
sys.exit(0)
