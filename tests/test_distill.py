"""FusionDistill's step-4 loss and the expert (ILIAC) loss against hand computations."""

import functools
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax.degradations.plan import LevelPlan
from fdjax.distill import cosine_distance, expert_loss, fusiondistill_loss
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


def test_cosine_distance_gradient_is_finite_at_an_all_zero_row():
  # The norm's own gradient at 0 is 0/0: a zero feature row made every gradient that
  # row reaches NaN (a MoE's gates too). With the norm clamped at eps, as PyTorch's
  # CosineSimilarity, the zero row's gradient is -t / (eps |t|) / B (closed form).
  eps = 1e-8
  s = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]], np.float32)
  t = np.array([[3.0, 0.0, 4.0], [2.0, 1.0, 2.0]], np.float32)
  grad = np.asarray(jax.grad(lambda x: cosine_distance(x, jnp.asarray(t), eps))(jnp.asarray(s)))
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(grad[0], -t[0] / (eps * 5.0) / 2, rtol=1e-5)
  sn, tn = np.linalg.norm(s[1]), np.linalg.norm(t[1])   # d(-cos)/ds = -(t/(sn tn) - cos s/sn^2)
  cos = s[1] @ t[1] / (sn * tn)
  np.testing.assert_allclose(grad[1], -(t[1] / (sn * tn) - cos * s[1] / sn**2) / 2, rtol=1e-5)


def _softmax_ce(logits, labels):
  logits = logits - logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return -np.mean(logp[np.arange(len(labels)), labels])


@pytest.mark.parametrize("gammas", [[1.0, 0.5], 0.5])   # one per expert, or one for all
def test_fusiondistill_loss_equals_hand_computation(gammas):
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

  alpha = 0.1
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
    expected += np.broadcast_to(gammas, (2,))[i] * np.mean(1 - cos)
  assert np.isclose(float(loss), expected, rtol=1e-4), (float(loss), expected)
  assert set(metrics) >= {"ce", "cos", "train_accuracy"}
  # Each expert's share of the loss (gradient homogenization differentiates them one by
  # one, fdjax.moe.homogenize; its rows then sum to this loss's gradient): they sum to it.
  assert metrics["task_losses"].shape == (2,)
  assert np.isclose(float(np.sum(metrics["task_losses"])), float(loss), rtol=1e-6)
  with pytest.raises(ValueError, match="one gamma per expert"):
    fusiondistill_loss(model, UNIT, degrade=degrade, num_experts=2, gammas=[1.0, 1.0, 1.0])


def test_expert_loss_equals_hand_computation():
  # ILIAC (stage 2): ce_weight * CE(expert(degraded)) + cos_weight * (1 - cos) to the
  # frozen clean model's features of the CLEAN images (weights unequal, degrade not the
  # identity: a loss that fed the teacher the degraded view, or weighted the cosine by
  # ce_weight, would differ).
  model = cifar_resnet(8, 3)
  expert = init_variables(model, jax.random.key(0), (32, 32, 3))
  clean_model = init_variables(model, jax.random.key(1), (32, 32, 3))
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  labels = np.array([2, 0, 1, 2], np.int32)
  ce_weight, cos_weight = 0.7, 2.5
  loss_fn = expert_loss(model, UNIT, degrade=lambda key, x: 255 - x, ce_weight=ce_weight,
                        cos_weight=cos_weight)
  loss, _ = jax.jit(loss_fn)(expert["params"], expert["batch_stats"],
                             {"image": jnp.asarray(images), "label": jnp.asarray(labels)},
                             jax.random.key(3), clean_model)
  (logits, feats), _ = jax.jit(functools.partial(model.apply, train=True,
                                                 mutable=["batch_stats"]))(
      expert, normalize(255 - images, "unit"))
  _, tfeats = jax.jit(functools.partial(model.apply, train=False))(
      clean_model, normalize(images, "unit"))
  s = np.asarray(feats["stage3"], np.float64).reshape(4, -1)
  t = np.asarray(tfeats["stage3"], np.float64).reshape(4, -1)
  cos = (s * t).sum(1) / (np.linalg.norm(s, axis=1) * np.linalg.norm(t, axis=1))
  expected = (ce_weight * _softmax_ce(np.asarray(logits, np.float64), labels)
              + cos_weight * np.mean(1 - cos))
  assert np.isclose(float(loss), expected, rtol=1e-4), (float(loss), expected)


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
  # Flat grey in: share 0 (awgn) must come out with values other than 0, 128 and 255,
  # share 1 (sapn) with only those and some 0 or 255. (The test used to check the shape
  # only: a combined degradation that returned its input, or swapped them, passed.)
  images = jnp.full((8, 8, 8, 3), 128, jnp.uint8)
  out = np.asarray(LevelPlan(("awgn", "sapn")).combined()(jax.random.key(0), images))
  assert out.shape == images.shape
  noisy, salted = out[:4], out[4:]
  assert np.isin(noisy, (0, 128, 255), invert=True).any()
  assert set(np.unique(salted)) <= {0, 128, 255} and (salted != 128).any()
  with pytest.raises(ValueError, match="equal shares"):
    LevelPlan(("jpeg", "blur", "awgn")).combined()(jax.random.key(0), images)


def test_output_distance_of_each_task_against_numpy():
  from fdjax.tasks import RestorationTask
  rng = np.random.default_rng(2)
  # restoration: per image, the mean |a - b| (L1) or sqrt(d^2 + eps^2) (Charbonnier)
  a, b = rng.uniform(0, 1, (2, 3, 5, 4, 3)), rng.uniform(0, 1, (2, 3, 5, 4, 3))
  l1 = RestorationTask(patch=None, flip=False, rot90=False)
  np.testing.assert_allclose(l1.output_distance(jnp.asarray(a), jnp.asarray(b)),
                             np.abs(a - b).mean(axis=(-3, -2, -1)), rtol=1e-5)
  charb = RestorationTask(patch=None, flip=False, rot90=False, loss="charbonnier")
  eps = 1e-3
  np.testing.assert_allclose(charb.output_distance(jnp.asarray(a), jnp.asarray(b)),
                             np.sqrt((a - b) ** 2 + eps ** 2).mean(axis=(-3, -2, -1)), rtol=1e-5)
  # classification: KL(softmax(teacher) || softmax(student)) = sum p log(p / q)
  s, t = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
  p = np.exp(t) / np.exp(t).sum(-1, keepdims=True)
  q = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
  np.testing.assert_allclose(UNIT.output_distance(jnp.asarray(s), jnp.asarray(t)),
                             (p * np.log(p / q)).sum(-1), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(UNIT.output_distance(jnp.asarray(s), jnp.asarray(s + 3.0)), 0,
                             atol=1e-6)


def test_fusiondistill_output_term_is_the_mean_distance_to_each_expert():
  # loss(output_weight=w) - loss(0) = w * mean_i KL(expert_i(teacher view of share i) ||
  # student(share i)), each share's KL averaged over its images.
  model = cifar_resnet(8, 3)
  keys = jax.random.split(jax.random.key(3), 3)
  student = init_variables(model, keys[0], (32, 32, 3))
  experts = [init_variables(model, k, (32, 32, 3)) for k in keys[1:]]
  images = np.random.default_rng(4).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  batch = {"image": jnp.asarray(images), "label": jnp.asarray([0, 2, 1, 1], jnp.int32)}
  degrade = lambda key, x: jnp.concatenate([255 - x[:2], x[2:] // 2])
  losses = {}
  for w in (0.0, 2.5):
    loss_fn = fusiondistill_loss(model, UNIT, degrade=degrade, num_experts=2, output_weight=w)
    losses[w], (_, metrics) = jax.jit(loss_fn)(student["params"], student["batch_stats"], batch,
                                               jax.random.key(5), stack_trees(experts))
  degraded = np.concatenate([255 - images[:2], images[2:] // 2])
  (logits, _), _ = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
      student, normalize(degraded, "unit"))
  apply_eval = jax.jit(functools.partial(model.apply, train=False))
  kls = []
  for i, expert in enumerate(experts):  # the classification teacher view: the clean images
    t_logits, _ = apply_eval(expert, normalize(images[2 * i:2 * i + 2], "unit"))
    t = np.asarray(t_logits, np.float64)
    s = np.asarray(logits[2 * i:2 * i + 2], np.float64)
    log_p = t - np.log(np.exp(t).sum(-1, keepdims=True))
    log_q = s - np.log(np.exp(s).sum(-1, keepdims=True))
    kls.append(np.mean((np.exp(log_p) * (log_p - log_q)).sum(-1)))
  assert float(losses[2.5] - losses[0.0]) == pytest.approx(2.5 * np.mean(kls), rel=1e-3)
  assert float(metrics["kd"]) == pytest.approx(np.mean(kls), rel=1e-3)
  with pytest.raises(ValueError, match="output_weight must be >= 0"):
    fusiondistill_loss(model, UNIT, degrade=degrade, num_experts=2, output_weight=-1.0)


def test_student_streams_are_not_a_views_key():
  """A student's PRNG stream (noisy top-K's ``'gating'``) must not be a key the task's
  views draw the degradation, crop or flip from: the views split the step key, and with
  JAX's partitionable Threefry ``split(key, n)[i] == fold_in(key, i)``."""
  from fdjax.distill.objectives import stream_keys
  key = jax.random.PRNGKey(7)
  streams = stream_keys(key, ("gating", "dropout"))
  views = [jax.random.fold_in(key, i) for i in range(64)]
  views += [k for n in range(2, 9) for k in jax.random.split(key, n)]
  taken = {tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in views}
  drawn = [tuple(np.asarray(jax.random.key_data(k)).ravel()) for k in streams.values()]
  assert len(set(drawn)) == 2
  assert not taken & set(drawn)
