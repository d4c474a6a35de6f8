"""The population step: ONE jitted engine step over P stacked members equals P separate
single-model steps; a frozen member never changes; the population axis shards."""


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdjax.population.gradients import freeze_members, member_grad_fn, population_grad_fn
from fdjax.population.objectives import share_losses
from fdjax.population.preferences import preference_vectors
from fdjax.population.state import create_population_state, stack_members
from fdjax.tasks.classification import NO_AUGMENT, ClassificationTask
from fdjax.train import create_train_state, make_mesh, make_train_step

P, M, PER_SHARE = 3, 2, 4


class TinyNet(nn.Module):
  """conv -> BatchNorm -> relu -> mean -> dense: ``(logits [B, classes], {'stage3': ...})``."""

  classes: int = 3

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.5)(
        nn.Conv(4, (3, 3), use_bias=False)(x)))
    return nn.Dense(self.classes)(jnp.mean(h, axis=(1, 2))), {"stage3": h}


def _setup():
  model, task = TinyNet(), ClassificationTask("unit", NO_AUGMENT)
  init = jax.jit(lambda key: model.init(key, jnp.zeros((1, 8, 8, 3)), train=False))
  members = [init(jax.random.PRNGKey(i)) for i in range(P)]
  rng = np.random.default_rng(0)
  batches = [{"image": jnp.asarray(rng.integers(0, 256, (M * PER_SHARE, 8, 8, 3)), jnp.uint8),
              "label": jnp.asarray(rng.integers(0, 3, M * PER_SHARE), jnp.int32)}
             for _ in range(2)]
  loss_fn = share_losses(model, task, lambda key, images: images, M)
  return members, batches, loss_fn


def _tx():
  return optax.chain(optax.add_decayed_weights(1e-2), optax.adam(1e-2))


def test_population_step_equals_separate_steps_and_member_0_stays_frozen(loop="vmap"):
  members, batches, loss_fn = _setup()
  mesh = make_mesh()
  preferences = preference_vectors(P, M)
  trainable = np.array([False, True, True])
  tx = optax.chain(_tx(), freeze_members(trainable))
  state = create_population_state(stack_members(members), tx, jax.random.PRNGKey(7), None, mesh)
  step = make_train_step(loss_fn, tx, mesh, donate=False,
                         grad_fn=population_grad_fn(preferences, trainable=trainable, loop=loop))
  for batch in batches:
    state, metrics = step(state, batch)
  assert metrics["loss"].shape == (P,) and metrics["task_losses"].shape == (P, M)

  # member 0: exactly as it started, parameters and BatchNorm statistics
  for got, want in zip(jax.tree.leaves(jax.tree.map(lambda x: x[0], state.variables)),
                       jax.tree.leaves(members[0])):
    np.testing.assert_array_equal(got, want)
  for i in (1,):   # (0.5, 0.5): both objectives' normalised gradients
    single = create_train_state(members[i], _tx(), jax.random.PRNGKey(7), mesh)
    single_step = make_train_step(loss_fn, _tx(), mesh, donate=False,
                                  grad_fn=member_grad_fn(M, preferences[i]))
    for batch in batches:
      single, _ = single_step(single, batch)
    for got, want in zip(jax.tree.leaves(jax.tree.map(lambda x: x[i], state.variables)),
                         jax.tree.leaves(single.variables)):
      np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    assert not np.allclose(jax.tree.leaves(single.params)[0], jax.tree.leaves(members[i])[0])


@pytest.mark.long
def test_population_axis_shards_over_a_mesh(run_on_eight_cpu_devices):
  """Members split over a 'population' mesh axis train exactly as on one device
  (tests/population_sharding_check.py on 8 simulated CPU devices)."""
  run_on_eight_cpu_devices("population_sharding_check.py", "population sharding OK")


class RegularizedTinyNet(TinyNet):
  """TinyNet that asks for a regularizer, 0.1 x the conv kernel's sum of squares (as
  MEASNet's balance loss reaches every training loss through ``features``)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    logits, features = TinyNet.__call__(self, x, train)
    kernel = self.variables["params"]["Conv_0"]["kernel"]
    return logits, {**features, "regularizer": 0.1 * jnp.sum(kernel ** 2)}


def test_each_objective_carries_the_models_regularizer():
  # The population step differentiates each objective's loss apart: a regularizer added
  # to the reported mean only (MEASNet's balance loss under ea_adam) got no gradient.
  task = ClassificationTask("unit", NO_AUGMENT)
  variables = TinyNet().init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), train=False)
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (6, 8, 8, 3)).astype(np.uint8),
           "label": rng.integers(0, 3, 6).astype(np.int32)}
  losses = {}
  for model in (TinyNet(), RegularizedTinyNet()):
    loss_fn = share_losses(model, task, lambda k, x: x, 2)
    _, (_, metrics) = loss_fn(variables["params"], variables["batch_stats"], batch,
                              jax.random.PRNGKey(1))
    losses[type(model).__name__] = np.asarray(metrics["task_losses"])
  kernel = np.asarray(variables["params"]["Conv_0"]["kernel"], np.float64)
  np.testing.assert_allclose(losses["RegularizedTinyNet"] - losses["TinyNet"],
                             [0.1 * np.sum(kernel ** 2)] * 2, rtol=1e-5)
