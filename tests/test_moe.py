"""Mixture-of-experts student: gating and balance loss against closed forms, the MoE ResNet
against the dense one it is built from, gradients through FusionDistill's loss, init,
cost, and expert-parallel sharding (subprocess with 8 simulated devices).

Tiny models (depth 8, 8x8 images, batch 4) and variables drawn with numpy (threefry
initialisation is slow to compile) keep this fast.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax.distill import fusiondistill_loss
from fdjax.models import cifar_resnet
from fdjax.moe import (active_param_count, balance_loss, cv_squared, dispatch_tensors,
                       expert_capacity, expert_param_count, inference_flops, moe_resnet,
                       moe_variables, param_count, pool_gates, relative_cost, top_k_gates)
from fdjax.tasks import NO_AUGMENT, ClassificationTask
from fdjax.train import init_variables
from fdjax.trees import stack_trees
from random_weights import random_variables

SHAPE = (8, 8, 3)
E = 4
UNIT = ClassificationTask("unit", NO_AUGMENT)


def _apply(model, variables, x):
  return model.apply(variables, x, train=False)


apply = jax.jit(_apply, static_argnums=0)   # cached per (equal) model


@pytest.fixture(scope="module")
def dense_models():
  dense = cifar_resnet(8, 3)
  return dense, random_variables(dense, 0, SHAPE), [random_variables(dense, i, SHAPE)
                                                    for i in range(1, E + 1)]


@pytest.fixture(scope="module")
def images():
  offsets = np.array([-3.0, -1.0, 1.0, 3.0])[:, None, None, None]   # diverse routing
  return jnp.asarray(np.random.default_rng(9).normal(size=(4, *SHAPE)) + offsets, jnp.float32)


# ---------------------------------------------------------------- gating, closed forms


def test_cv_squared_and_balance_loss_closed_forms():
  assert float(cv_squared(jnp.array([1.0, 1, 1, 1]))) == 0.0
  # [3,1,0,0]: mean 1, population variance (4 + 0 + 1 + 1) / 4 = 1.5 -> cv^2 = 1.5.
  assert np.isclose(float(cv_squared(jnp.array([3.0, 1, 0, 0]))), 1.5, rtol=1e-6)
  one_hot = jnp.eye(4)[jnp.array([0, 0, 0, 1])]         # importance = load = [3, 1, 0, 0]
  assert np.isclose(float(balance_loss(one_hot, one_hot)), 3.0, rtol=1e-6)
  # uniform softmax (importance [2,2,2,2] -> 0), load [4,2,2,0]: mean 2, var 2 -> 0.5.
  probs = jnp.full((8, 4), 0.25)
  mask = jnp.asarray(np.eye(4)[[0, 0, 0, 0, 1, 1, 2, 2]])
  assert np.isclose(float(balance_loss(probs, mask)), 0.5, rtol=1e-6)
  # only the importance term is differentiable; it pushes the over-used expert down.
  p = jnp.array([[0.7, 0.1, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1]])
  g = jax.grad(lambda q: balance_loss(q, jnp.ones_like(q)))(p)
  assert float(g[0, 0]) > 0 and float(g[0, 3]) < 0


def test_top_k_keeps_largest_and_renormalises():
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(5), size=6).astype(np.float32)
  for k in (1, 2, 3):
    gates, mask = top_k_gates(jnp.asarray(probs), k)
    keep = np.argsort(-probs, axis=1)[:, :k]
    ref = np.zeros_like(probs)
    np.put_along_axis(ref, keep, np.take_along_axis(probs, keep, 1), 1)
    np.testing.assert_array_equal(np.asarray(mask), ref > 0)
    np.testing.assert_allclose(np.asarray(gates), ref / ref.sum(1, keepdims=True), rtol=1e-6)
    raw, _ = top_k_gates(jnp.asarray(probs), k, renormalize=False)   # MEASNet eq. (3) form
    np.testing.assert_allclose(np.asarray(raw), ref, rtol=1e-6)
  with pytest.raises(ValueError, match="k <= num_experts"):
    top_k_gates(jnp.asarray(probs), 6)


def test_dispatch_tensors_and_capacity_by_hand():
  assert expert_capacity(8, 4, 2) == 8                  # capacity_factor None = E/K: no drops
  assert expert_capacity(8, 4, 2, 1.0) == 4 and expert_capacity(8, 4, 1, 1.25) == 3
  gates = jnp.array([[0.6, 0.4, 0.0], [1.0, 0.0, 0.0], [0.0, 0.3, 0.7]])
  mask = (gates > 0).astype(jnp.float32)
  dispatch, combine = dispatch_tensors(gates, mask, capacity=1)
  expected = np.zeros((3, 3, 1))
  expected[0, 0, 0] = expected[0, 1, 0] = 1            # token 0 first in experts 0 and 1
  expected[2, 2, 0] = 1                                # token 1 dropped by expert 0 (full),
  np.testing.assert_array_equal(np.asarray(dispatch), expected)   # token 2 dropped by 1
  np.testing.assert_allclose(np.asarray(combine[0, :, 0]), [0.6, 0.4, 0.0])
  pooled = pool_gates(jnp.asarray(np.eye(2)[[[0, 1], [1, 1]]][None]), (1, 1))
  np.testing.assert_allclose(np.asarray(pooled), [[[[0.25, 0.75]]]])


# ---------------------------------------------------------------- the model


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(dispatch="sparse", k=1),
    dict(routing="pixel", channel_sharing=True, router_source="stem"),
])
def test_identical_experts_reproduce_the_dense_model(dense_models, images, kwargs):
  # Gates sum to 1 and the shared branch equals the experts, so any routing gives the
  # dense model's logits when every expert is the fused model.
  dense, fused, _ = dense_models
  model = moe_resnet(8, 3, num_experts=E, **kwargs)
  variables = moe_variables(model, fused, [fused] * E, jax.random.key(1, impl="rbg"), SHAPE)
  logits, features = apply(model, variables, images)
  dense_logits, dense_features = apply(dense, fused, images)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(dense_logits), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(features["stage3"]), np.asarray(dense_features["stage3"]),
                             rtol=1e-4, atol=1e-5)
  gates = np.asarray(features["router"])
  expected_shape = (4, 4, 4, E) if kwargs.get("routing") == "pixel" else (4, E)
  assert gates.shape == expected_shape                      # stage3 input is 4x4 for 8x8 images
  np.testing.assert_allclose(gates.sum(-1), 1.0, rtol=1e-5)
  assert ((gates > 0).sum(-1) == model.k).all()
  assert features["aux_loss"].shape == ()


@pytest.mark.long
def test_expert_loops_build_the_same_variables_and_train_the_same(dense_models, images):
  # 'unroll' (the CPU default) and 'vmap' (GPU/TPU, expert parallelism) are two schedules
  # of one computation: same variable tree, same training-mode outputs, batch statistics
  # and gradients.
  dense, fused, experts = dense_models
  models = {loop: moe_resnet(8, 3, num_experts=E, k=2, expert_loop=loop)
            for loop in ("vmap", "unroll")}
  shapes = {loop: jax.tree.map(np.shape, m.init(jax.random.key(0), jnp.zeros((1, *SHAPE))))
            for loop, m in models.items()}
  assert shapes["vmap"] == shapes["unroll"]
  variables = moe_variables(models["vmap"], fused, experts, jax.random.key(3, impl="rbg"), SHAPE)
  x = jnp.asarray(images, jnp.float32) / 255.0

  def loss(params, model):
    (logits, _), updates = model.apply({**variables, "params": params}, x, train=True,
                                       mutable=["batch_stats"])
    return jnp.sum(logits * jnp.arange(3.0)), updates

  results = {loop: jax.grad(loss, has_aux=True)(variables["params"], m)
             for loop, m in models.items()}
  for a, b in zip(jax.tree.leaves(results["vmap"]), jax.tree.leaves(results["unroll"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="expert_loop"):
    moe_resnet(8, 3, num_experts=E, expert_loop="scan").init(jax.random.key(0),
                                                            jnp.zeros((1, *SHAPE)))


def expert_stage3_outputs(dense, fused, experts, images):
  """``[E, B, h, w, 64]``: stage3 of the dense model with expert i's stage3 on fused stages 1-2."""
  outputs = []
  for expert in experts:
    hybrid = {c: {**fused[c], **{n: v for n, v in expert[c].items() if n.startswith("stage3")}}
              for c in ("params", "batch_stats")}
    outputs.append(np.asarray(apply(dense, hybrid, images)[1]["stage3"], np.float64))
  return np.stack(outputs)


@pytest.mark.parametrize("expert_loop", ["vmap", "unroll"])
def test_dense_and_sparse_dispatch_agree(dense_models, images, expert_loop):
  dense, fused, experts = dense_models
  model = moe_resnet(8, 3, num_experts=E, k=2, expert_loop=expert_loop)
  variables = moe_variables(model, fused, experts, jax.random.key(2, impl="rbg"), SHAPE)
  variables["params"]["stage3_moe"]["router"]["expert_prompts"] *= 10.0   # less uniform gates
  logits, features = apply(model, variables, images)
  gates = np.asarray(features["router"], np.float64)                         # [B, E]
  selected = gates > 0
  assert selected.any(0).sum() >= 3 and len({tuple(row) for row in selected}) >= 2
  # per-example gather (capacity_factor None) and Switch buffers with capacity_factor E/K
  for capacity_factor in (None, E / 2):
    sparse = model.clone(dispatch="sparse", capacity_factor=capacity_factor)
    np.testing.assert_allclose(np.asarray(apply(sparse, variables, images)[0]),
                               np.asarray(logits), rtol=1e-5, atol=1e-5)
  # MEASNet eq. (3): the stage output is the gate-weighted sum of the experts' outputs.
  expected = np.einsum("ebhwc,be->bhwc", expert_stage3_outputs(dense, fused, experts, images),
                       gates)
  np.testing.assert_allclose(np.asarray(features["stage3"]), expected, rtol=1e-4, atol=1e-5)


def test_per_pixel_routing_combines_pooled_gates(dense_models, images):
  dense, fused, experts = dense_models
  model = moe_resnet(8, 3, num_experts=E, k=2, routing="pixel")
  variables = moe_variables(model, fused, experts, jax.random.key(6, impl="rbg"), SHAPE)
  variables["params"]["stage3_moe"]["router"]["expert_prompts"] *= 10.0
  _, features = apply(model, variables, images)
  gates = np.asarray(features["router"], np.float64)
  assert gates.shape == (4, 4, 4, E)                     # stage3's input resolution (8x8 images)
  assert ((gates > 0).sum(-1) == 2).all() and len(np.unique(gates.argmax(-1))) >= 2
  pooled = gates.reshape(4, 2, 2, 2, 2, E).mean(axis=(2, 4))   # to stage3's 2x2 output
  pooled /= pooled.sum(-1, keepdims=True)
  expected = np.einsum("ebhwc,bhwe->bhwc", expert_stage3_outputs(dense, fused, experts, images),
                       pooled)
  np.testing.assert_allclose(np.asarray(features["stage3"]), expected, rtol=1e-4, atol=1e-5)


def test_init_copies_experts_and_fused_weights(dense_models):
  _, fused, experts = dense_models
  model = moe_resnet(8, 3, num_experts=E, channel_sharing=True)
  variables = moe_variables(model, fused, experts, jax.random.key(3, impl="rbg"), SHAPE)
  for collection in ("params", "batch_stats"):
    got, ref = variables[collection], fused[collection]
    for name in ("stem_conv", "stem_norm", "stage1_block0", "stage2_block0", "classifier"):
      if name in ref:
        jax.tree.map(np.testing.assert_array_equal, got[name], ref[name])
    moe = got["stage3_moe"]
    for i, expert in enumerate(experts):
      jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[i], b),
                   moe["experts"]["block0"], expert[collection]["stage3_block0"])
    jax.tree.map(np.testing.assert_array_equal, moe["shared"]["block0"],
                 ref["stage3_block0"])
  assert {"router", "channel_gate"} <= set(variables["params"]["stage3_moe"])
  with pytest.raises(ValueError, match="need 4 expert variables"):
    moe_variables(model, fused, experts[:2], jax.random.key(0), SHAPE)


def test_router_gets_gradients_through_fusiondistill_loss(dense_models):
  dense, fused, experts = dense_models
  model = moe_resnet(8, 3, num_experts=E, k=2)
  variables = moe_variables(model, fused, experts, jax.random.key(4, impl="rbg"), SHAPE)
  loss_fn = fusiondistill_loss(model, UNIT,
                               degrade=lambda k, x: x, num_experts=E, teacher_model=dense,
                               aux_loss_weight=1e-4)
  rng = np.random.default_rng(5)
  batch = {"image": jnp.asarray(rng.integers(0, 256, (4, *SHAPE), dtype=np.uint8)),
           "label": jnp.asarray([0, 1, 2, 0], jnp.int32)}

  @jax.jit
  def grads_and_metrics(params):
    def loss(p):
      value, (_, metrics) = loss_fn(p, variables["batch_stats"], batch, jax.random.key(0),
                                    stack_trees(experts))
      return value, metrics
    return jax.grad(loss, has_aux=True)(params)

  grads, metrics = grads_and_metrics(variables["params"])
  router = grads["stage3_moe"]["router"]
  for leaf in (router["expert_prompts"], router["basic_prompts"], router["prompt_conv"]["kernel"]):
    assert float(jnp.abs(leaf).sum()) > 0
  assert float(metrics["aux_loss"]) >= 0
  expert_grads = np.abs(np.asarray(grads["stage3_moe"]["experts"]["block0"]["Conv_0"]["kernel"]))
  assert (expert_grads.reshape(E, -1).sum(1) > 0).sum() >= 2    # the selected experts learn


def test_cost_counts_active_experts(dense_models):
  dense, fused, _ = dense_models
  model = moe_resnet(8, 3, num_experts=E, k=1)
  shapes = jax.eval_shape(lambda: init_variables(model, jax.random.key(0), SHAPE))
  stage3 = sum(np.size(x) for x in jax.tree.leaves(fused["params"]["stage3_block0"]))
  assert expert_param_count(shapes) == E * stage3
  assert active_param_count(shapes, E, 1) == param_count(shapes) - (E - 1) * stage3
  assert active_param_count(shapes, E, 2) == param_count(shapes) - (E - 2) * stage3
  ratio = relative_cost({"params": param_count(shapes), "active_params": active_param_count(
      shapes, E, 1)}, {"params": param_count(fused)})
  router_params = param_count(shapes) - param_count(fused) - (E - 1) * stage3
  assert np.isclose(ratio["active_params"], 1 + router_params / param_count(fused))


def test_inference_flops_count_multiply_adds_in_closed_form():
  # XLA counts 2 FLOPs per multiply-add (+1 per bias add); compiled for XLA:CPU on any
  # backend, from the variables' shapes alone.
  conv = nn.Conv(5, (3, 3), use_bias=False, padding="VALID")
  variables = jax.eval_shape(conv.init, jax.random.key(0), jnp.zeros((1, 10, 12, 4)))
  assert inference_flops(conv.apply, variables, (2, 10, 12, 4)) == 2 * (2 * 8 * 10) * 9 * 4 * 5
  dense = nn.Dense(7)
  variables = dense.init(jax.random.key(0), jnp.zeros((1, 6)))
  assert inference_flops(dense.apply, variables, (3, 6)) == 2 * 3 * 6 * 7 + 3 * 7


def test_inference_flops_without_a_cpu_backend_counts_on_the_default_one(monkeypatch):
  # JAX_PLATFORMS=cuda (or tpu) leaves the CPU backend out: jax.devices("cpu") raises,
  # which crashed the cost columns after a run's training was done.
  from fdjax.moe import cost as cost_lib

  real = jax.devices

  def no_cpu(backend=None):
    if backend == "cpu":
      raise RuntimeError("Backend 'cpu' failed to initialize: not in JAX_PLATFORMS")
    return real(backend)

  monkeypatch.setattr(cost_lib.jax, "devices", no_cpu)
  dense = nn.Dense(7)
  variables = dense.init(jax.random.key(0), jnp.zeros((1, 6)))
  assert inference_flops(dense.apply, variables, (3, 6)) == 2 * 3 * 6 * 7 + 3 * 7


def test_sparse_top1_costs_about_one_dense_model(dense_models):
  dense, fused, experts = dense_models
  model = moe_resnet(8, 3, num_experts=E, k=1)
  variables = moe_variables(model, fused, experts, jax.random.key(7, impl="rbg"), SHAPE)
  flops = {name: inference_flops(m.apply, v, (1, *SHAPE)) for name, m, v in [
      ("dense", dense, fused), ("moe", model, variables),
      ("sparse", model.clone(dispatch="sparse"), variables)]}
  assert flops["moe"] / flops["dense"] > 1.5            # dense dispatch: 4 copies of stage3
  assert 1.0 < flops["sparse"] / flops["dense"] < 1.1   # one expert + the router


@pytest.mark.long
def test_expert_sharded_forward_equals_unsharded(run_on_eight_cpu_devices):
  run_on_eight_cpu_devices("moe_sharding_check.py", "OK expert-sharded MoE")


def test_model_cost_counts_active_parameters_and_throughput_is_batch_over_median_time(
    monkeypatch):
  from fdjax.moe import cost as cost_lib

  model = moe_resnet(8, 3, num_experts=E, k=2)
  variables = init_variables(model, jax.random.key(0), SHAPE)
  apply = lambda v, x: model.apply(v, x, train=False)[0]
  moe = cost_lib.model_cost(apply, variables, (1, *SHAPE), E, 2)
  assert moe["params"] == param_count(variables)
  assert moe["active_params"] == active_param_count(variables, E, 2) < moe["params"]
  dense = cost_lib.model_cost(apply, variables, (1, *SHAPE))
  assert dense["active_params"] == dense["params"] and dense["flops"] == moe["flops"] > 0
  # A fake clock: the timed calls take 1, 3 and 2 s; 8 images / median 2 s = 4 images/s.
  ticks = iter([0.0, 1.0, 10.0, 13.0, 20.0, 22.0])
  monkeypatch.setattr(cost_lib.time, "perf_counter", lambda: next(ticks))
  assert cost_lib.images_per_second(lambda v, b: b, None, np.zeros((8, 2)), warmup=1,
                                    repeats=3) == 4.0
