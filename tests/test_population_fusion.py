"""EA-Adam's fusion network: one-hot mixing weights give the members themselves, and the
baked static model equals the dynamic network run with the averaged mixing weights."""

import jax
import jax.numpy as jnp
import numpy as np

from fdjax.population.fusion_net import (MixingPredictor, average_mixing, bake, dynamic_apply)
from fdjax.population.state import stack_members
from fdjax.tasks.classification import NO_AUGMENT, ClassificationTask

from test_population_step import TinyNet

P = 3


def test_baked_model_equals_dynamic_network_with_averaged_mixing_weights():
  model, task = TinyNet(), ClassificationTask("unit", NO_AUGMENT)
  init = jax.jit(lambda key: model.init(key, jnp.zeros((1, 8, 8, 3)), train=False))
  members = [init(jax.random.PRNGKey(i)) for i in range(P)]
  # distinct running statistics, so that mixing them matters too
  members = [jax.tree.map(lambda v: v, m) for m in members]   # mutable copies
  members[1]["batch_stats"]["BatchNorm_0"]["mean"] = jnp.full((4,), 0.3)
  stacked = stack_members(members)
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3)), jnp.uint8)
  x = task.model_input(images)
  predictor = MixingPredictor(P)
  params = jax.jit(predictor.init)(jax.random.PRNGKey(5), x)["params"]

  one_hot = jax.nn.one_hot(jnp.array([0, 1, 2, 0, 1, 2]), P)
  dynamic_fn = jax.jit(lambda a: dynamic_apply(model, stacked, a, x)[0])
  dynamic = dynamic_fn(one_hot)
  apply = jax.jit(lambda variables: model.apply(variables, x, train=False)[0])
  member_logits = [apply(m) for m in members]
  for b, p in enumerate([0, 1, 2, 0, 1, 2]):
    np.testing.assert_allclose(dynamic[b], member_logits[p][b], rtol=1e-5, atol=1e-5)

  alpha = jax.jit(predictor.apply)({"params": params}, x)
  np.testing.assert_allclose(alpha.sum(1), 1, rtol=1e-5)
  mean_alpha = average_mixing(task, predictor, params, [images[:4], images[4:]])
  np.testing.assert_allclose(mean_alpha, alpha.mean(0), rtol=1e-5)
  baked = apply(bake(stacked, mean_alpha))
  dynamic = dynamic_fn(jnp.broadcast_to(mean_alpha, (6, P)))
  np.testing.assert_allclose(baked, dynamic, rtol=1e-5, atol=1e-5)
