"""The MoE router (issue 11): noisy top-K gating against Shazeer et al.'s closed form, no
noise at evaluation, gradients reaching the router with K=1 (through the noisy load and
through degradation supervision), routing accuracy with near-clean levels apart, the
routed-experts predictor, and a router that learns to separate two degradations.

Tiny models (depth 8, 8x8 images) and variables drawn with numpy keep this fast.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import norm

from fdjax.data.splits import ImageSet
from fdjax.degradations.plan import LevelPlan
from fdjax.distill import fusiondistill_loss
from fdjax.distill.objectives import router_supervision
from fdjax.methods import routed_experts
from fdjax.models import cifar_resnet
from fdjax.moe import (balance_loss, cv_squared, moe_resnet, moe_variables, noisy_top_k_load,
                       top_k_gates)
from fdjax.moe import usage as usage_lib
from fdjax.moe.student import router_param, scale_updates
from fdjax.tasks import NO_AUGMENT, ClassificationTask
from fdjax.trees import stack_trees
from random_weights import random_variables

SHAPE = (8, 8, 3)
UNIT = ClassificationTask("unit", NO_AUGMENT)


def kth_excluding(values, k, i):
  """The k-th largest entry of ``values`` without entry ``i`` (Shazeer et al., eq. 9)."""
  return np.sort(np.delete(values, i))[::-1][k - 1]


# ---------------------------------------------------------------- noisy gating, closed forms


@pytest.mark.parametrize("k", [1, 2])
def test_noisy_load_matches_the_normal_cdf_closed_form(k):
  rng = np.random.default_rng(0)
  clean = rng.normal(size=(5, 4))
  std = 0.3 + rng.random((5, 4))
  noisy = clean + rng.normal(size=(5, 4)) * std
  got = np.asarray(noisy_top_k_load(jnp.asarray(clean, jnp.float32),
                                    jnp.asarray(noisy, jnp.float32),
                                    jnp.asarray(std, jnp.float32), k))
  expected = np.array([[norm.cdf((clean[t, i] - kth_excluding(noisy[t], k, i)) / std[t, i])
                        for i in range(4)] for t in range(5)])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  # A constructed case by hand: k=1, expert 0 wins this draw, expert 1 is second.
  c, n, s = np.array([1.0, 0.5, -1.0]), np.array([2.0, 1.0, -0.5]), np.array([1.0, 0.5, 2.0])
  one = np.asarray(noisy_top_k_load(jnp.asarray(c), jnp.asarray(n), jnp.asarray(s), 1))
  np.testing.assert_allclose(one, [norm.cdf((1.0 - 1.0) / 1.0),     # beat the runner-up
                                   norm.cdf((0.5 - 2.0) / 0.5),     # beat the winner
                                   norm.cdf((-1.0 - 2.0) / 2.0)], rtol=1e-5)
  # The balance loss sums those probabilities as the load.
  probs = jax.nn.softmax(jnp.asarray(noisy, jnp.float32))
  _, mask = top_k_gates(probs, k)
  loss = balance_loss(probs, mask, load_probs=jnp.asarray(got))
  assert np.isclose(float(loss), float(cv_squared(probs.sum(0)) + cv_squared(got.sum(0))),
                    rtol=1e-5)
  with pytest.raises(ValueError, match="k < num_experts"):
    noisy_top_k_load(jnp.asarray(clean), jnp.asarray(noisy), jnp.asarray(std), 4)


def test_noisy_load_is_differentiable_where_the_count_is_not():
  rng = np.random.default_rng(1)
  clean = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  noise = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)

  def load_term(logits, hard):
    std = jnp.full_like(logits, 0.7)
    noisy = logits + noise * std
    if hard:
      return cv_squared(top_k_gates(jax.nn.softmax(noisy), 1)[1].sum(0))
    return cv_squared(noisy_top_k_load(logits, noisy, std, 1).sum(0))

  assert float(jnp.abs(jax.grad(load_term)(clean, False)).sum()) > 0
  assert float(jnp.abs(jax.grad(load_term)(clean, True)).sum()) == 0


# ---------------------------------------------------------------- the MoE student


@pytest.fixture(scope="module")
def dense_models():
  dense = cifar_resnet(8, 3)
  return dense, random_variables(dense, 0, SHAPE), [random_variables(dense, i, SHAPE)
                                                    for i in range(1, 3)]


def _student(dense_models, **kwargs):
  _, fused, experts = dense_models
  model = moe_resnet(8, 3, num_experts=2, **kwargs)
  return model, moe_variables(model, fused, experts, jax.random.key(3, impl="rbg"), SHAPE)


def test_no_noise_at_evaluation_and_noise_in_training(dense_models):
  model, variables = _student(dense_models, k=1, noisy_gating=True, router_source="stem")
  assert "noise_weights" in variables["params"]["stage3_moe"]["router"]
  x = jnp.asarray(np.random.default_rng(2).normal(size=(6, *SHAPE)), jnp.float32)

  @jax.jit
  def evaluate(key):
    return model.apply(variables, x, train=False, rngs={"gating": key})

  plain = jax.jit(lambda: model.apply(variables, x, train=False))()
  for seed in (0, 1):
    logits, features = evaluate(jax.random.key(seed))
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(plain[0]))
    np.testing.assert_array_equal(np.asarray(features["router"]), np.asarray(plain[1]["router"]))

  @jax.jit
  def train(key):
    (_, features), _ = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                   rngs={"gating": key})
    return features["router"], features["router_logits"]

  def train_gates(seed):
    return tuple(np.asarray(a) for a in train(jax.random.key(seed)))

  (g0, l0), (g1, l1) = train_gates(0), train_gates(1)
  np.testing.assert_array_equal(l0, l1)                # the logits before noise
  assert not np.array_equal(g0, g1)                    # the noise changes the choices


def test_router_gets_gradients_with_k1_through_noise_and_supervision(dense_models):
  """K=1, noisy gating: one forward pass, the gradient of each loss term at the router.
  The task loss does not reach it (the single renormalised gate is exactly 1); the
  balance loss does (differentiable load, noise std), and so does the supervision."""
  model, variables = _student(dense_models, k=1, noisy_gating=True)
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(8, *SHAPE)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, 8), jnp.int32)

  @jax.jit
  def term_grads(params):
    def terms(p):
      (logits, features), _ = model.apply({"params": p, "batch_stats": variables["batch_stats"]},
                                          x, train=True, mutable=["batch_stats"],
                                          rngs={"gating": jax.random.key(0)})
      task = jnp.mean(UNIT.per_example_loss(logits, labels))
      return jnp.stack([task, features["aux_loss"],
                        router_supervision(features["router_logits"], 2)[0]])
    return jax.jacrev(terms)(params)["stage3_moe"]["router"]

  router = term_grads(variables["params"])
  task, balance, supervision = (jax.tree.map(lambda g, i=i: g[i], router) for i in range(3))
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(task)) < 1e-6
  for leaf in (balance["expert_prompts"], balance["noise_weights"],
               balance["prompt_conv"]["kernel"]):
    assert float(jnp.abs(leaf).sum()) > 0
  for leaf in (supervision["expert_prompts"], supervision["basic_prompts"],
               supervision["prompt_conv"]["kernel"]):
    assert float(jnp.abs(leaf).sum()) > 0


def test_router_supervision_closed_form_and_pixel_average():
  logits = jnp.asarray([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])   # shares: 0,0,1,1
  ce, acc = router_supervision(logits, 2)
  expected = -np.mean([np.log(np.exp(2) / (np.exp(2) + 1)), np.log(1 / (1 + np.e)),
                       np.log(1 / (np.e + 1)), np.log(np.exp(3) / (1 + np.exp(3)))])
  assert np.isclose(float(ce), expected, rtol=1e-6) and float(acc) == 0.5
  per_pixel = jnp.broadcast_to(logits[:, None, None, :], (4, 2, 2, 2))
  per_pixel = per_pixel + jnp.asarray([1.0, -1.0])[None, :, None, None]   # averages out
  np.testing.assert_allclose(np.asarray(router_supervision(per_pixel, 2)), [ce, acc], rtol=1e-6)


def test_router_lr_scale_scales_only_router_updates():
  updates = {"stage3_moe": {"router": {"w": jnp.ones(2)}, "experts": {"w": jnp.ones(2)}},
             "classifier": {"kernel": jnp.ones(2)}}
  tx = scale_updates(10.0)
  scaled, _ = tx.update(updates, tx.init(updates))
  assert float(scaled["stage3_moe"]["router"]["w"][0]) == 10.0
  assert float(scaled["stage3_moe"]["experts"]["w"][0]) == 1.0
  assert float(scaled["classifier"]["kernel"][0]) == 1.0
  assert router_param("stage3_moe/router/expert_prompts")
  assert not router_param("stage3_moe/experts/block0/Conv_0/kernel")


def test_prompt_init_scale_scales_the_expert_prompts(dense_models):
  _, base = _student(dense_models)
  _, scaled = _student(dense_models, prompt_init_scale=10.0)
  a = np.asarray(base["params"]["stage3_moe"]["router"]["expert_prompts"])
  b = np.asarray(scaled["params"]["stage3_moe"]["router"]["expert_prompts"])
  np.testing.assert_allclose(b, 10 * a, rtol=1e-5)


# ---------------------------------------------------------------- routing accuracy


def test_near_clean_table():
  near = usage_lib.is_near_clean
  assert near("jpeg", 101) and near("jpeg", 90) and not near("jpeg", 89)
  assert near("blur", 0.0) and near("blur", 0.4) and not near("blur", 0.5)
  assert near("awgn", 4) and not near("awgn", 5)
  assert near("sapn", 0.01) and not near("sapn", 0.02)
  assert near("haze", 0.0) and not near("haze", 0.1)


def test_routing_accuracy_buckets_from_counts():
  stats = usage_lib.RoutingStats(
      ("awgn", "blur"), [[0.0, 2.0, 30.0], [0.0, 2.0]],
      [np.array([[5, 5], [6, 4], [9, 1]], float), np.array([[5, 5], [1, 9]], float)],
      [np.full(3, 10 * np.log(2)), np.full(2, 10 * np.log(2))])
  acc = usage_lib.routing_accuracy(stats)
  assert acc["awgn"]["near_clean"] == pytest.approx(11 / 20)
  assert acc["awgn"]["non_clean"] == pytest.approx(0.9)
  assert acc["blur"]["near_clean"] == pytest.approx(0.5)
  assert acc["blur"]["non_clean"] == pytest.approx(0.9)
  assert acc["non_clean"] == pytest.approx(0.9)
  assert acc["awgn"]["per_level"] == [[0.0, 0.5], [2.0, 0.6], [30.0, 0.9]]
  np.testing.assert_allclose(usage_lib.usage(stats), [[0.75, 0.25], [0.1, 0.9]])
  entropy = usage_lib.gate_entropy(stats)
  assert entropy["mean"] == pytest.approx(np.log(2)) and entropy["max"] == pytest.approx(np.log(2))


# ---------------------------------------------------------------- learning to route


def _images(n, seed):
  """Smooth random images (4x4 colour patterns upsampled to 8x8) with a little texture."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(40, 216, (n, 4, 4, 3)).repeat(2, 1).repeat(2, 2)
  return np.clip(coarse + rng.integers(-8, 9, (n, *SHAPE)), 0, 255).astype(np.uint8)


@pytest.mark.long
def test_router_learns_to_separate_two_degradations(dense_models):
  """awgn (sigma 20..50) vs blur (sigma 1..3): trained with FusionDistill's loss plus
  degradation supervision on the combined batch (share 0 awgn, share 1 blur), noisy
  top-1 gating on the stem output, 150 Adam steps on the whole student, the router
  sends held-out test images to their degradation's expert (> 90%); the routed-experts
  predictor gives each image its chosen expert's output."""
  dense, fused, experts = dense_models
  plan = LevelPlan(("awgn", "blur"), (("awgn", 20.0, 50.0), ("blur", 1.0, 3.0)), stride=10)
  model, variables = _student(dense_models, k=1, router_source="stem", noisy_gating=True)
  loss_fn = fusiondistill_loss(model, UNIT, degrade=plan.combined(), num_experts=2,
                               teacher_model=dense, aux_loss_weight=1e-2, router_weight=1.0,
                               rng_streams=("gating",))
  tx = optax.chain(optax.adam(3e-3), scale_updates(3.0))
  frozen = stack_trees(experts)
  train_images = _images(256, 0)

  @jax.jit
  def step(params, batch_stats, opt_state, images, key):
    batch = {"image": images, "label": jnp.zeros(images.shape[0], jnp.int32)}
    grads, (batch_stats, metrics) = jax.grad(
        lambda p: loss_fn(p, batch_stats, batch, key, frozen), has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, metrics

  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  rng = np.random.default_rng(1)
  for i in range(150):
    images = jnp.asarray(train_images[rng.choice(256, 32, replace=False)])
    params, batch_stats, opt_state, metrics = step(params, batch_stats, opt_state, images,
                                                   jax.random.key(i))
  trained = {"params": params, "batch_stats": batch_stats}
  test = ImageSet(_images(64, 2), np.zeros(64, np.int32))
  stats = usage_lib.routing_stats(UNIT, model, trained, test, plan, batch_size=32)
  accuracy = usage_lib.routing_accuracy(stats)
  assert accuracy["non_clean"] > 0.9, accuracy
  assert accuracy["near_clean"] is None                       # no near-clean level in range
  # Routed experts: each image gets the output of the expert its router picks.
  predict = jax.jit(routed_experts.routed_predictor(UNIT, model, dense))
  images = jnp.asarray(test.images[:16])
  out = np.asarray(predict({"router": trained, "experts": frozen}, images))
  choice = np.asarray(routed_experts.route(UNIT, model, trained, images))
  each = np.stack([np.asarray(UNIT.predict(dense, e, images)) for e in experts])
  np.testing.assert_allclose(out, each[choice, np.arange(16)], rtol=1e-5, atol=1e-5)
  # The decision on the stem output: the stem and the router, less its noise weights
  # (gate noise is a training-time term: no noise at evaluation).
  router = {k: v for k, v in params["stage3_moe"]["router"].items() if k != "noise_weights"}
  assert "noise_weights" in params["stage3_moe"]["router"]
  assert routed_experts.router_params(model, trained, (1, *SHAPE)) == sum(
      np.size(x) for x in jax.tree.leaves(router)) + sum(
      np.size(x) for name in ("stem_conv", "stem_norm") for x in jax.tree.leaves(params[name]))


def test_router_features_come_from_the_routed_block_with_most_pixels_the_later_on_ties():
  from fdjax.moe.routing import Routing, routing_features

  def routing(h, w, fill, aux):
    gates = jnp.full((1, h, w, 2), fill, jnp.float32)
    return {"routing": Routing(gates, gates, gates, gates + 1.0, jnp.float32(aux))}

  features = routing_features({"a": routing(4, 4, 0.1, 1.0), "b": routing(8, 8, 0.2, 2.0),
                               "c": routing(8, 8, 0.3, 0.5), "d": routing(2, 2, 0.4, 0.0)})
  np.testing.assert_array_equal(features["router"], features["router_c"])
  np.testing.assert_array_equal(features["router_logits"], features["router_logits_c"])
  assert float(features["aux_loss"]) == 3.5
  assert float(routing_features({})["aux_loss"]) == 0.0 and "router" not in routing_features({})
