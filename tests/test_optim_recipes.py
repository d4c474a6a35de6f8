"""AdamW, the linear warm-up and gradient clipping (fdjax.train.optim) against PyTorch's
formulas, written out in numpy."""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdjax.config import optimizer_config
from fdjax.train import make_optimizer, make_schedule


def _run(cfg, p, grads, epochs=1, steps_per_epoch=1):
  tx, _ = make_optimizer(cfg, epochs=epochs, steps_per_epoch=steps_per_epoch)
  params = jnp.asarray(p, jnp.float32)
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
    params = optax.apply_updates(params, updates)
  return np.asarray(params)


def test_adamw_matches_pytorch_formula():
  # torch.optim.AdamW(lr, betas=(b1, b2), eps=1e-8, weight_decay=wd): p *= 1 - lr * wd;
  # m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; p -= lr * m_hat / (sqrt(v_hat) + eps).
  # b1 is the block's momentum (PyTorch's default 0.9; here another value).
  lr, b1, b2, eps, wd = 1e-2, 0.6, 0.99, 1e-8, 0.05
  cfg = optimizer_config("adamw", lr, weight_decay=wd, schedule="constant", beta2=b2,
                         momentum=b1)
  p = np.array([0.5, -1.5, 3.0]); m = np.zeros(3); v = np.zeros(3)
  grads = [np.array([4.0, -2.0, 0.1]), np.array([0.04, -0.02, 0.3]),
           np.array([-0.5, 0.02, 0.0])]
  start = p.copy()
  for t, g in enumerate(grads, start=1):
    p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g * g
    p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
  np.testing.assert_allclose(_run(cfg, start, grads), p, rtol=1e-5)
  # Adam's weight decay is coupled (added to the gradient): another result.
  coupled = optimizer_config("adam", lr, weight_decay=wd, schedule="constant", beta2=b2,
                             momentum=b1)
  assert not np.allclose(_run(coupled, start, grads), p, rtol=1e-4)


def test_adam_and_radam_take_beta1_from_momentum():
  # torch.optim.Adam(lr, betas=(momentum, b2)) without weight decay, in numpy.
  lr, b1, b2, eps = 1e-2, 0.5, 0.9, 1e-8
  p = np.array([0.5, -1.5, 3.0]); m = np.zeros(3); v = np.zeros(3)
  grads = [np.array([4.0, -2.0, 0.1]), np.array([-0.04, 0.02, 0.3]),
           np.array([-0.5, 0.02, 0.0])]
  start = p.copy()
  for t, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g * g
    p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
  adam = optimizer_config("adam", lr, weight_decay=0.0, schedule="constant", beta2=b2,
                          momentum=b1)
  np.testing.assert_allclose(_run(adam, start, grads), p, rtol=1e-5)
  # RAdam's first steps (rectification off) are SGD with momentum's bias-corrected m.
  radam = optimizer_config("radam", lr, weight_decay=0.0, schedule="constant", beta2=b2,
                           momentum=b1)
  q = start.copy(); m = np.zeros(3)
  for t, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g
    q = q - lr * m / (1 - b1 ** t)
  np.testing.assert_allclose(_run(radam, start, grads), q, rtol=1e-5)


def test_warmup_then_cosine_is_bolts_linear_warmup_cosine_annealing_per_step():
  # lr * (n + 1) / W for n < W (Bolts: lr * n / (W - 1), from 0), then Bolts' cosine
  # eta_min + (lr - eta_min) * (1 + cos(pi * (n - W) / (T - W))) / 2, eta_min = 0,
  # T = epochs * steps_per_epoch.
  lr, epochs, per_epoch, warmup_epochs = 2e-4, 10, 7, 1.5
  cfg = optimizer_config("adamw", lr, schedule="cosine", warmup_epochs=warmup_epochs)
  _, schedule = make_optimizer(cfg, epochs=epochs, steps_per_epoch=per_epoch)
  total, w = epochs * per_epoch, round(warmup_epochs * per_epoch)
  assert w == 10
  for n in (0, 1, 5, w - 1, w, w + 1, 40, total - 1):
    want = (lr * (n + 1) / w if n < w
            else 0.5 * lr * (1 + math.cos(math.pi * (n - w) / (total - w))))
    assert float(schedule(n)) == pytest.approx(want, rel=1e-5, abs=lr * 1e-6), n
  assert float(schedule(w - 1)) == pytest.approx(lr) == float(schedule(w))


def test_warmup_before_milestones_and_a_constant_rate():
  # The milestones stay epochs from the stage's start; a constant rate is reached at W - 1.
  schedule = make_schedule("multistep", 0.1, epochs=10, steps_per_epoch=5, milestones=(3,),
                           decay=0.2, warmup_steps=4)
  assert [round(float(schedule(n)), 6) for n in (0, 3, 4, 14, 15)] == [0.025, 0.1, 0.1, 0.1,
                                                                          0.02]
  constant = make_schedule("constant", 0.1, epochs=2, steps_per_epoch=5, warmup_steps=5)
  assert [round(float(constant(n)), 6) for n in (0, 4, 9)] == [0.02, 0.1, 0.1]
  with pytest.raises(ValueError, match=r"warmup_steps must lie in 0..9"):
    make_schedule("constant", 0.1, epochs=2, steps_per_epoch=5, warmup_steps=10)
  # A warm-up that rounds to the whole stage keeps one step at the full rate.
  _, almost = make_optimizer(optimizer_config("sgd", 0.1, schedule="constant",
                                              warmup_epochs=0.99), epochs=1, steps_per_epoch=3)
  assert float(almost(2)) == pytest.approx(0.1)


def test_clip_norm_scales_large_gradients_before_the_weight_decay():
  # torch.nn.utils.clip_grad_norm_(params, c) then SGD(lr, weight_decay=wd):
  # g *= min(1, c / ||g||); p -= lr * (g + wd * p).
  lr, c, wd = 0.5, 1.0, 0.1
  cfg = optimizer_config("sgd", lr, momentum=0.0, weight_decay=wd, schedule="constant",
                         clip_norm=c)
  p = np.array([1.0, 2.0])
  for g in (np.array([6.0, 8.0]), np.array([0.3, -0.4])):     # norms 10 and 0.5
    want = p - lr * (g * min(1.0, c / np.linalg.norm(g)) + wd * p)
    np.testing.assert_allclose(_run(cfg, p, [g]), want, rtol=1e-6)


def test_configs_made_before_the_fields_train_as_before():
  cfg = optimizer_config("radam", 1e-3, schedule="cosine")
  older = optimizer_config("radam", 1e-3, schedule="cosine")
  for field in ("warmup_epochs", "clip_norm"):
    del older[field]
  grads = [np.array([0.3, -2.0]), np.array([1.0, 0.5]), np.array([-0.2, 0.1])]
  np.testing.assert_array_equal(_run(cfg, np.array([0.1, 0.2]), grads, epochs=3),
                                _run(older, np.array([0.1, 0.2]), grads, epochs=3))
