"""FusionDistill's step-4 loss and the expert (ILIAC) loss against hand computations."""

import functools
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax.degradations.plan import LevelPlan
from fdjax.distill import cosine_distance, fusiondistill_loss
from fdjax.tasks import NO_AUGMENT, ClassificationTask
from fdjax.models import cifar_resnet, normalize
from fdjax.train import init_variables
from fdjax.trees import stack_trees

UNIT = ClassificationTask("unit", NO_AUGMENT)


def test_cosine_distance_matches_numpy_on_flattened_features():
  rng = np.random.default_rng(0)
  s, t = rng.normal(size=(3, 2, 2, 4)), rng.normal(size=(3, 2, 2, 4))
  sf, tf = s.reshape(3, -1), t.reshape(3, -1)
  cos = (sf * tf).sum(1) / (np.linalg.norm(sf, axis=1) * np.linalg.norm(tf, axis=1))
  assert np.isclose(cosine_distance(jnp.asarray(s), jnp.asarray(t)), np.mean(1 - cos), atol=1e-6)
  assert np.isclose(cosine_distance(jnp.asarray(s), 2.5 * jnp.asarray(s)), 0.0, atol=1e-6)
  assert np.isclose(cosine_distance(jnp.asarray(s), -jnp.asarray(s)), 2.0, atol=1e-6)
  with pytest.raises(ValueError, match="feature shapes differ"):
    cosine_distance(jnp.ones((2, 3)), jnp.ones((2, 4)))


def _softmax_ce(logits, labels):
  logits = logits - logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return -np.mean(logp[np.arange(len(labels)), labels])


def test_fusiondistill_loss_equals_hand_computation():
  # 2 experts, 2 images per share: loss = alpha*CE(student(degraded)) + sum_i gamma_i*(1-cos_i),
  # expert i seeing the CLEAN images of share i, the student the degraded ones.
  model = cifar_resnet(8, 3)
  keys = jax.random.split(jax.random.key(0), 3)
  student = init_variables(model, keys[0], (32, 32, 3))
  experts = [init_variables(model, k, (32, 32, 3)) for k in keys[1:]]
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  labels = np.array([0, 2, 1, 1], np.int32)

  def degrade(key, x):  # deterministic, share-dependent stand-in for the degradations
    return jnp.concatenate([255 - x[:2], x[2:] // 2])

  alpha, gammas = 0.1, [1.0, 0.5]
  loss_fn = fusiondistill_loss(model, UNIT,
                               degrade=degrade, num_experts=2, alpha=alpha, gammas=gammas)
  # jitted: one compile instead of op-by-op dispatch of every layer (the suite's time)
  loss, (_, metrics) = jax.jit(loss_fn)(
      student["params"], student["batch_stats"],
      {"image": jnp.asarray(images), "label": jnp.asarray(labels)}, jax.random.key(5),
      stack_trees(experts))

  degraded = np.concatenate([255 - images[:2], images[2:] // 2])
  (logits, feats), _ = jax.jit(functools.partial(model.apply, train=True,
                                                 mutable=["batch_stats"]))(
      student, normalize(degraded, "unit"))
  apply_eval = jax.jit(functools.partial(model.apply, train=False))
  expected = alpha * _softmax_ce(np.asarray(logits, np.float64), labels)
  for i, expert in enumerate(experts):
    _, tfeats = apply_eval(expert, normalize(images[2 * i:2 * i + 2], "unit"))
    s = np.asarray(feats["stage3"][2 * i:2 * i + 2], np.float64).reshape(2, -1)
    t = np.asarray(tfeats["stage3"], np.float64).reshape(2, -1)
    cos = (s * t).sum(1) / (np.linalg.norm(s, axis=1) * np.linalg.norm(t, axis=1))
    expected += gammas[i] * np.mean(1 - cos)
  assert np.isclose(float(loss), expected, rtol=1e-4), (float(loss), expected)
  assert set(metrics) >= {"ce", "cos", "train_accuracy"}


def test_student_gradient_flows_but_teachers_are_frozen():
  model = cifar_resnet(8, 3)
  student = init_variables(model, jax.random.key(0), (32, 32, 3))
  experts = stack_trees([init_variables(model, jax.random.key(i), (32, 32, 3))
                             for i in (1, 2)])
  loss_fn = fusiondistill_loss(model, UNIT,
                               degrade=lambda k, x: x, num_experts=2)
  batch = {"image": jnp.full((4, 32, 32, 3), 100, jnp.uint8), "label": jnp.zeros(4, jnp.int32)}
  grads = jax.jit(jax.grad(lambda p, f: loss_fn(p, student["batch_stats"], batch,
                                                jax.random.key(0), f)[0],
                           argnums=(0, 1)))(student["params"], experts)
  assert float(jnp.abs(grads[0]["stem_conv"]["kernel"]).sum()) > 0
  assert all(float(jnp.abs(g).sum()) == 0 for g in jax.tree.leaves(grads[1]))


def test_combined_batch_degrades_each_share_with_its_own_degradation():
  images = jnp.full((8, 8, 8, 3), 128, jnp.uint8)
  out = np.asarray(LevelPlan(("jpeg", "sapn")).combined()(jax.random.key(0), images))
  assert out.shape == images.shape
  with pytest.raises(ValueError, match="equal shares"):
    LevelPlan(("jpeg", "blur", "awgn")).combined()(jax.random.key(0), images)
