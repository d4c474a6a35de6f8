"""Per-task gradients and gradient homogenization (fdjax.moe.homogenize), closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdjax.moe.homogenize import homogenize, per_task_value_and_grad
from fdjax.train.mesh import make_mesh
from fdjax.train.state import create_train_state
from fdjax.train.step import make_train_step


def _apply(tx, stacked, state=None, params=None):
  params = params if params is not None else jax.tree.map(lambda g: g[0], stacked)
  state = tx.init(params) if state is None else state
  return jax.jit(tx.update)(stacked, state, params)


def _stack(*rows):
  return jnp.asarray(np.stack(rows), jnp.float32)


@pytest.mark.parametrize("mode", ["sum", "pcgrad", "meta"])
def test_non_conflicting_gradients_are_summed(mode):
  g = {"a": _stack([1.0, 2.0], [3.0, 0.5]), "b": _stack([[1.0]], [[2.0]])}  # dot = 3+1+2 > 0
  out, state = _apply(homogenize(mode), g)
  np.testing.assert_allclose(out["a"], [4.0, 2.5], rtol=1e-6)
  np.testing.assert_allclose(out["b"], [[3.0]], rtol=1e-6)
  if mode == "meta":  # a second step with m = 0.1 * (4, 2.5, 3): g . m > 0 for both tasks
    out, _ = _apply(homogenize(mode), g, state)
    np.testing.assert_allclose(out["a"], [4.0, 2.5], rtol=1e-6)


def test_pcgrad_two_conflicting_tasks_closed_form():
  g1, g2 = np.array([1.0, 0.0]), np.array([-1.0, 1.0])  # g1 . g2 = -1
  out, _ = _apply(homogenize("pcgrad"), _stack(g1, g2))
  g1p = g1 - (-1.0) / 2.0 * g2  # (0.5, 0.5)
  g2p = g2 - (-1.0) / 1.0 * g1  # (0, 1)
  np.testing.assert_allclose(out, g1p + g2p, atol=1e-6)  # (0.5, 1.5)
  assert g1p @ g2 >= 0 and g2p @ g1 >= 0
  assert out @ g1 >= 0 and out @ g2 >= 0  # the summed update no longer opposes either task


def _pcgrad_reference(grads):
  """Literal PCGrad (Yu et al. 2020, Alg. 1) on flat vectors, cyclic order j = i+1, ..."""
  n = len(grads)
  total = np.zeros_like(grads[0])
  for i in range(n):
    gi = grads[i].copy()
    for s in range(1, n):
      gj = grads[(i + s) % n]
      if gi @ gj < 0:
        gi -= (gi @ gj) / (gj @ gj) * gj
    total += gi
  return total


def test_pcgrad_matches_literal_algorithm_over_concatenated_leaves():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 2, 3))
  flat = [np.concatenate([a[i], b[i].ravel()]) for i in range(3)]
  assert min(flat[i] @ flat[j] for i in range(3) for j in range(i)) < 0  # some conflict
  out, _ = _apply(homogenize("pcgrad"), {"a": jnp.asarray(a, jnp.float32),
                                         "b": jnp.asarray(b, jnp.float32)})
  ref = _pcgrad_reference(flat)
  np.testing.assert_allclose(np.concatenate([out["a"], np.ravel(out["b"])]), ref, atol=1e-5)


@pytest.mark.parametrize("mode", ["pcgrad", "meta"])
def test_non_shared_leaves_are_summed_plainly(mode):
  g = {"trunk": {"w": _stack([1.0, 0.0], [1.0, 1.0])},        # shared: dot = +1
       "moe": {"experts": {"w": _stack([5.0, 0.0], [-5.0, 0.0])}}}  # dot = -25
  # Over all leaves the dot would be -24 (conflict); over shared leaves only, none.
  tx = homogenize(mode, shared=lambda path: "/experts/" not in f"/{path}/")
  out, state = _apply(tx, g)
  np.testing.assert_allclose(out["trunk"]["w"], [2.0, 1.0], atol=1e-6)
  np.testing.assert_allclose(out["moe"]["experts"]["w"], [0.0, 0.0], atol=1e-6)
  all_shared, _ = _apply(homogenize(mode), g)
  assert not np.allclose(all_shared["trunk"]["w"], [2.0, 1.0])  # the predicate mattered
  if mode == "meta":  # no meta vector is kept for non-shared leaves
    assert state.meta["moe"]["experts"]["w"].shape == ()


def test_meta_ema_and_projection_over_two_steps():
  tx, d = homogenize("meta", meta_decay=0.9), 0.9
  params = jnp.zeros(2)
  state = tx.init(params)
  np.testing.assert_array_equal(state.meta, [0.0, 0.0])
  # Step 1 (m = 0 -> PCGrad): orthogonal tasks, no conflict: combined (1, 1).
  out, state = _apply(tx, _stack([1.0, 0.0], [0.0, 1.0]), state, params)
  np.testing.assert_allclose(out, [1.0, 1.0], atol=1e-6)
  m1 = (1 - d) * np.array([1.0, 1.0])
  np.testing.assert_allclose(state.meta, m1, atol=1e-7)
  # Step 2: g1 . m1 = -0.2 < 0 -> g1 loses exactly its component along m1; g2 . m1 > 0 kept.
  g1, g2 = np.array([-2.0, 0.0]), np.array([0.0, 1.0])
  out, state = _apply(tx, _stack(g1, g2), state, params)
  g1p = g1 - (g1 @ m1) / (m1 @ m1) * m1  # (-1, 1)
  np.testing.assert_allclose(g1p, [-1.0, 1.0], atol=1e-12)
  assert abs(g1p @ m1) < 1e-12
  np.testing.assert_allclose(out, g1p + g2, atol=1e-5)  # (-1, 2); PCGrad would give (-2, 1)
  np.testing.assert_allclose(state.meta, d * m1 + (1 - d) * (g1p + g2), atol=1e-6)


def test_meta_first_step_is_pcgrad():
  g = _stack([1.0, 0.0], [-1.0, 1.0])
  out, state = _apply(homogenize("meta"), g)
  np.testing.assert_allclose(out, [0.5, 1.5], atol=1e-6)
  np.testing.assert_allclose(state.meta, [0.05, 0.15], atol=1e-6)


def test_unknown_mode_and_unstacked_gradients_raise():
  with pytest.raises(ValueError, match="unknown homogenization mode"):
    homogenize("mgda")
  with pytest.raises(ValueError, match="stacked"):
    _apply(homogenize("pcgrad"), {"a": jnp.ones((2, 3)), "b": jnp.ones((3,))})


# --- per-task gradients inside the one train step -------------------------------------------

def _quadratic_loss(extra=0.0):
  """task_losses = [0.5 ||w - t_1||^2, 0.5 ||w - t_2||^2]; loss = their sum + extra * w_0."""

  def loss_fn(params, batch_stats, batch, key):
    w, t = params["w"], batch["target"]  # t [2, 2]: one target per task
    task_losses = 0.5 * jnp.sum((w[None] - t) ** 2, axis=-1)
    loss = jnp.sum(task_losses) + extra * w[0]
    return loss, (batch_stats, {"task_losses": task_losses})

  return loss_fn


TARGETS = np.array([[-1.0, 0.0], [1.0, -1.0]], np.float32)  # at w = 0: g1 = (1, 0), g2 = (-1, 1)


@pytest.mark.parametrize("residual", [True, False])
def test_per_task_grads_equal_separate_grads(residual):
  loss_fn = _quadratic_loss(extra=3.0)
  params = {"w": jnp.array([0.3, -0.2])}
  batch = {"target": jnp.asarray(TARGETS)}
  fn = jax.jit(per_task_value_and_grad(2, residual=residual)(loss_fn))
  (loss, (_, metrics)), grads = fn(params, {}, batch, jax.random.PRNGKey(0))
  expected = [jax.grad(lambda p, i=i: loss_fn(p, {}, batch, None)[1][1]["task_losses"][i])(params)
              ["w"] for i in range(2)]
  if residual:  # the extra term's gradient (3, 0) is shared equally between the two rows
    expected = [e + jnp.array([1.5, 0.0]) for e in expected]
    np.testing.assert_allclose(grads["w"].sum(0), jax.grad(
        lambda p: loss_fn(p, {}, batch, None)[0])(params)["w"], atol=1e-6)
  assert grads["w"].shape == (2, 2)
  np.testing.assert_allclose(grads["w"], np.stack(expected), atol=1e-6)
  np.testing.assert_allclose(loss, metrics["task_losses"].sum() + 3.0 * 0.3, rtol=1e-6)


def _one_step(tx, grad_fn=None, extra=0.0):
  mesh = make_mesh(jax.devices()[:1])
  state = create_train_state({"params": {"w": jnp.zeros(2)}, "batch_stats": {}}, tx,
                             jax.random.PRNGKey(0), mesh)
  kwargs = {} if grad_fn is None else {"grad_fn": grad_fn}
  step = make_train_step(_quadratic_loss(extra), tx, mesh, **kwargs)
  state, metrics = step(state, {"target": jnp.asarray(TARGETS)})
  return np.asarray(state.params["w"]), metrics


def test_pcgrad_inside_the_train_step():
  w, metrics = _one_step(optax.chain(homogenize("pcgrad"), optax.sgd(0.1)),
                         per_task_value_and_grad(2))
  # PCGrad of g1 = (1, 0), g2 = (-1, 1) is (0.5, 1.5); SGD: w = 0 - 0.1 * (0.5, 1.5).
  np.testing.assert_allclose(w, [-0.05, -0.15], atol=1e-6)
  assert float(metrics["finite"]) == 1.0 and metrics["task_losses"].shape == (2,)


def test_sum_mode_matches_the_default_step():
  plain, plain_metrics = _one_step(optax.sgd(0.1), extra=3.0)
  summed, metrics = _one_step(optax.chain(homogenize("sum"), optax.sgd(0.1)),
                              per_task_value_and_grad(2), extra=3.0)
  # grad_norm: the plain gradient's, (3, 1) at w = 0, not the norm of the stacked rows
  np.testing.assert_allclose([metrics["grad_norm"], plain_metrics["grad_norm"]],
                             [np.sqrt(10.0)] * 2, rtol=1e-6)
  np.testing.assert_allclose(summed, plain, atol=1e-6)  # (0 - 0.1 * (3, 1)) = (-0.3, -0.1)
  np.testing.assert_allclose(plain, [-0.3, -0.1], atol=1e-6)


def test_meta_after_its_first_step_does_not_project_tasks_that_agree_with_the_meta_vector():
  # Step 2: g1 . g2 = -4 < 0 (PCGrad would project both) but g1 . m1 = g2 . m1 = 0.1 > 0:
  # meta keeps both whole, so the combined gradient is g1 + g2 = (1, 1).
  tx = homogenize("meta", meta_decay=0.9)
  params = jnp.zeros(2)
  _, state = _apply(tx, _stack([1.0, 0.0], [0.0, 1.0]), None, params)   # m1 = 0.1 (1, 1)
  out, _ = _apply(tx, _stack([2.0, -1.0], [-1.0, 2.0]), state, params)
  np.testing.assert_allclose(out, [1.0, 1.0], atol=1e-6)
  pcgrad, _ = _apply(homogenize("pcgrad"), _stack([2.0, -1.0], [-1.0, 2.0]), None, params)
  assert not np.allclose(pcgrad, [1.0, 1.0], atol=1e-3)
