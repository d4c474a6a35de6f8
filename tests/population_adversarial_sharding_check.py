"""Run with 8 simulated CPU devices (see test_population_adversarial.py).

EA-Adam's restoration population: 4 restorers, each with its own discriminator, on a
('data', 'population') mesh of shape (2, 4), members AND discriminators sharded over
'population' (``population_sharding``) and the batch over 'data': two adversarial
population steps (vmapped members) equal the same steps on 1 device.
"""

import os

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from fdjax.population import adversarial  # noqa: E402
from fdjax.population.evolution import init_evolution  # noqa: E402
from fdjax.population.gradients import population_grad_fn  # noqa: E402
from fdjax.population.preferences import preference_vectors  # noqa: E402
from fdjax.population.state import create_population_state, population_mesh  # noqa: E402
from fdjax.tasks.restoration import RestorationTask  # noqa: E402
from fdjax.train import make_mesh  # noqa: E402
from population_sharded_training import train_population  # noqa: E402
from test_population_adversarial import SIZE, TinyRestorer, _degrade  # noqa: E402

assert jax.device_count() == 8, jax.devices()
P = 4
model, disc = TinyRestorer(), adversarial.Discriminator(width=4, depth=1)
task = RestorationTask(patch=None, flip=False, rot90=False)
# SGD: Adam's first steps are lr * sign(g), which turns reduction-order noise in a
# near-zero gradient into a full step.
critic_tx, tx = optax.sgd(1e-1), optax.sgd(1e-1)
k_members, k_critic = jax.random.split(jax.random.PRNGKey(0))
params = jax.vmap(lambda k: model.init(k, jnp.zeros((1, SIZE, SIZE, 3)))["params"])(
    jax.random.split(k_members, P))
critic = adversarial.init_critic(disc, critic_tx, k_critic, P, (SIZE, SIZE, 3))
members = {"params": params, "batch_stats": {}}
rng = np.random.default_rng(0)
batches = [{"image": jnp.asarray(rng.integers(0, 256, (8, SIZE, SIZE, 3)), jnp.uint8)}
           for _ in range(2)]
loss_fn = adversarial.adversarial_loss(model, task, _degrade, disc, critic_tx)
grad_fn = population_grad_fn(preference_vectors(P, 2), loop="vmap")


def train(mesh, sharded: bool):
  evolution = init_evolution(jax.random.PRNGKey(9), preference_vectors(P, 2),
                             np.ones(P, bool))
  return train_population(
      lambda m: create_population_state(members, tx, jax.random.PRNGKey(3), evolution, m,
                                        critic=critic),
      loss_fn, tx, grad_fn, batches, mesh, sharded)


mesh = population_mesh(4)
assert dict(mesh.shape) == {"data": 2, "population": 4}, mesh.shape
sharded, metrics = train(mesh, True)
for leaf in (jax.tree.leaves(sharded.params)[0], jax.tree.leaves(sharded.critic["params"])[0]):
  assert len({d.id for d in leaf.sharding.device_set}) == 8
  assert leaf.addressable_shards[0].data.shape[0] == 1, "split over 'population'"
single, _ = train(make_mesh(jax.devices()[:1]), False)
moved = jax.tree.leaves(single.critic["params"])[0]
assert not np.allclose(np.asarray(moved), np.asarray(jax.tree.leaves(critic["params"])[0]))
for a, b in zip(jax.tree.leaves((sharded.params, sharded.critic)),
                jax.tree.leaves((single.params, single.critic))):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
print("adversarial population sharding OK", metrics["d_loss"].shape)
