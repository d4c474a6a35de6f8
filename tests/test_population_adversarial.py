"""EA-Adam's restoration objectives: the RaGAN losses against their closed form, the
gradient-statistics proxy against scipy's Wasserstein distance, ONE population step
(discriminator update, then generator update with the updated discriminator, per-tensor
normalised objective gradients) against a hand-written per-member computation, and
exact resume of the population with its discriminators across an evolutionary epoch."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import wasserstein_distance

from fdjax.data import ImageSet
from fdjax.degradations import resize
from fdjax.eval.gradient_stats import gradient_w1
from fdjax.eval.metric import split_scores
from fdjax.population import adversarial
from fdjax.population.evolution import EvolutionConfig, init_evolution
from fdjax.population.families import normalised_mean
from fdjax.population.perception_fitness import PerceptionScores
from fdjax.population.gradients import freeze_members, population_grad_fn
from fdjax.population.hook import evolution_hook
from fdjax.population.preferences import preference_vectors
from fdjax.population.state import create_population_state
from fdjax.tasks.restoration import RestorationTask
from fdjax.train import LoopConfig, fit, make_mesh, make_train_step
from fdjax.train.step import step_key

P, SIZE, LR, D_LR = 3, 8, 1e-2, 1e-2


class TinyRestorer(nn.Module):
  """x + conv(relu(conv(x))): a residual restorer ``(image, features)``."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.Conv(4, (3, 3))(x))
    return x + nn.Conv(3, (3, 3))(h), {"bottleneck": h}


def _degrade(key, images):
  del key
  return resize.bicubic_down_up(images, 2, quantize=True).astype(jnp.uint8)


def _softplus(x):
  return np.logaddexp(0.0, x)


def test_ragan_losses_match_their_closed_form():
  r, f = np.array([1.5, -0.3, 0.2]), np.array([0.1, -1.0, 2.0])
  d = 0.5 * (_softplus(-(r - f.mean())).mean() + _softplus(f - r.mean()).mean())
  g = 0.5 * (_softplus(r - f.mean()).mean() + _softplus(-(f - r.mean())).mean())
  np.testing.assert_allclose(adversarial.ragan_d_loss(jnp.array(r), jnp.array(f)), d, rtol=1e-6)
  np.testing.assert_allclose(adversarial.ragan_g_loss(jnp.array(r), jnp.array(f)), g, rtol=1e-6)


def test_gradient_w1_equals_scipy_wasserstein_on_luma_and_orders_blur():
  rng = np.random.default_rng(0)
  clean = rng.integers(0, 256, (2, 20, 18, 3)).astype(np.float32)
  blurred = (clean + np.roll(clean, 1, axis=1) + np.roll(clean, 1, axis=2)) / 3
  got = np.asarray(gradient_w1(blurred, clean, y_channel=True, shave=2))
  y = lambda im: (16 + im @ np.array([65.481, 128.553, 24.966]) / 255)[2:-2, 2:-2]
  grad = lambda im: np.hypot(im[1:, :-1] - im[:-1, :-1], im[:-1, 1:] - im[:-1, :-1]).ravel()
  want = [wasserstein_distance(grad(y(b)), grad(y(c))) for b, c in zip(blurred, clean)]
  np.testing.assert_allclose(got, want, rtol=1e-4)
  assert np.all(got > 1.0)
  np.testing.assert_allclose(gradient_w1(clean, clean), 0.0, atol=1e-6)


def test_perception_values_scorer_is_the_masked_mean_psnr_and_w1_over_batches():
  """The perception family's fitness through the one split scorer: 5 clean images in
  batches of 2 (one padding row), each batch degraded by a transform that depends on its
  index; references: numpy Y-channel PSNR and scipy's Wasserstein distance per image."""
  rng = np.random.default_rng(3)
  clean = rng.integers(0, 256, (5, 16, 14, 3)).astype(np.uint8)
  shift = lambda index, images: jnp.clip(images.astype(jnp.int32) + 7 * (index + 1), 0,
                                         255).astype(jnp.uint8)
  predict = jax.jit(lambda variables, images: images.astype(jnp.float32))
  scorer = PerceptionScores(RestorationTask(y_channel=True, shave=2))
  got = split_scores(scorer, predict, {}, ImageSet.from_fields({"image": clean}),
                     batch_size=2, transform=shift)
  seen = np.clip(clean.astype(np.int64) + 7 * (np.arange(5) // 2 + 1)[:, None, None, None],
                 0, 255).astype(np.float64)
  y = lambda im: (16 + im @ np.array([65.481, 128.553, 24.966]) / 255)[2:-2, 2:-2]
  grad = lambda im: np.hypot(im[1:, :-1] - im[:-1, :-1], im[:-1, 1:] - im[:-1, :-1]).ravel()
  psnr = [10 * np.log10(255.0 ** 2 / np.mean((y(a) - y(b)) ** 2)) for a, b in zip(seen, clean)]
  w1 = [wasserstein_distance(grad(y(a)), grad(y(b))) for a, b in zip(seen, clean)]
  assert sorted(got) == ["gradient_w1", "psnr"]
  np.testing.assert_allclose(got["psnr"], np.mean(psnr), rtol=1e-5)
  np.testing.assert_allclose(got["gradient_w1"], np.mean(w1), rtol=1e-4)


def test_normalised_mean_weighs_objectives_on_different_scales_alike():
  values = np.array([[30.0, -10.0], [28.0, -4.0], [29.0, -7.0]])   # PSNR, -W1
  np.testing.assert_allclose(normalised_mean(values), [0.5, 0.5, 0.5] + np.full(3, 1e-3))


@functools.lru_cache(maxsize=1)
def _setup():
  """Shared by the tests: one compiled step (members vmapped: a smaller program)."""
  model, disc = TinyRestorer(), adversarial.Discriminator(width=4, depth=1)
  task = RestorationTask(patch=None, flip=False, rot90=False)
  critic_tx = optax.sgd(D_LR)   # SGD here: Adam's first step is sign(g), ill-conditioned near 0

  @jax.jit   # one compilation for the P members and their discriminators
  def init(key):
    k_members, k_critic = jax.random.split(key)
    params = jax.vmap(lambda k: model.init(k, jnp.zeros((1, SIZE, SIZE, 3)))["params"])(
        jax.random.split(k_members, P))
    return params, adversarial.init_critic(disc, critic_tx, k_critic, P, (SIZE, SIZE, 3))

  params, critic = init(jax.random.PRNGKey(0))
  members = {"params": params, "batch_stats": {}}
  loss_fn = adversarial.adversarial_loss(model, task, _degrade, disc, critic_tx)
  trainable = np.array([False, True, True])
  tx = optax.chain(optax.sgd(LR), freeze_members(trainable))
  step = make_train_step(loss_fn, tx, make_mesh(), donate=False,
                         grad_fn=population_grad_fn(preference_vectors(P, 2), trainable=trainable,
                                                   loop="vmap"))
  return model, disc, task, members, critic, tx, step, trainable


def _reference_member(model, disc, task, params, critic, weights, batch, key):
  """One member's step written out: SGD on the RaGAN D loss at the current output, then
  SGD on sum_k w_k g_k / (||g_k|| + 1e-7) per tensor, g_k = grad of L1 and of the RaGAN G
  loss with the UPDATED discriminator."""
  x, y, _ = task.views(key, batch, _degrade)
  x, y = jnp.asarray(x, jnp.float32) / 255, jnp.asarray(y, jnp.float32) / 255
  out = lambda p: model.apply({"params": p}, x)[0]
  sp = jax.nn.softplus

  def d_loss(dp):
    r, f = disc.apply({"params": dp}, y), disc.apply({"params": dp}, out(params))
    return 0.5 * (jnp.mean(sp(-(r - f.mean()))) + jnp.mean(sp(f - r.mean())))

  new_d = jax.tree.map(lambda w, g: w - D_LR * g, critic["params"], jax.grad(d_loss)(critic["params"]))

  def g_loss(p):
    r, f = disc.apply({"params": new_d}, y), disc.apply({"params": new_d}, out(p))
    return 0.5 * (jnp.mean(sp(r - f.mean())) + jnp.mean(sp(-(f - r.mean()))))

  g1 = jax.grad(lambda p: jnp.mean(jnp.abs(out(p) - y)))(params)
  g2 = jax.grad(g_loss)(params)
  combined = jax.tree.map(lambda a, b: weights[0] * a / (jnp.linalg.norm(a) + 1e-7)
                          + weights[1] * b / (jnp.linalg.norm(b) + 1e-7), g1, g2)
  return jax.tree.map(lambda w, g: w - LR * g, params, combined), new_d


def test_one_population_step_updates_each_discriminator_then_its_generator():
  model, disc, task, members, critic, tx, step, trainable = _setup()
  evolution = init_evolution(jax.random.PRNGKey(9), preference_vectors(P, 2), trainable)
  state = create_population_state(members, tx, jax.random.PRNGKey(1), evolution, make_mesh(),
                                  critic=critic)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.integers(0, 256, (4, SIZE, SIZE, 3)), jnp.uint8)}
  new, metrics = step(state, batch)
  assert metrics["task_losses"].shape == (P, 2) and metrics["d_loss"].shape == (P,)
  key, prefs = step_key(state), preference_vectors(P, 2)
  reference = jax.jit(lambda *args: _reference_member(model, disc, task, *args))
  new, members, critic = jax.device_get((new, members, critic))   # index on the host
  for i in range(P):
    member = lambda tree: jax.tree.map(lambda leaf: leaf[i], tree)
    got_g, got_d = member(new.params), member(new.critic["params"])
    if not trainable[i]:   # frozen: generator AND discriminator unchanged
      for a, b in zip(jax.tree.leaves((got_g, got_d)),
                      jax.tree.leaves((member(members["params"]), member(critic["params"])))):
        np.testing.assert_array_equal(a, b)
      continue
    want_g, want_d = reference(member(members["params"]), member(critic), prefs[i], batch, key)
    for a, b in zip(jax.tree.leaves((got_g, got_d)), jax.tree.leaves((want_g, want_d))):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
  # the discriminators are separate: member 1's and 2's moved differently
  assert not np.allclose(new.critic["params"]["Dense_1"]["kernel"][1],
                         new.critic["params"]["Dense_1"]["kernel"][2])


def _score(stacked):
  kernel = np.asarray(stacked["params"]["Conv_0"]["kernel"]).reshape(P, -1)
  return np.stack([kernel.mean(1), -kernel.mean(1) + 0.1 * np.abs(kernel).mean(1)], axis=1)


def _fit(tmp_path, setup, max_steps=0):
  _, _, _, members, critic, tx, step, trainable = setup
  evolution = init_evolution(jax.random.PRNGKey(9), preference_vectors(P, 2), trainable)
  state = create_population_state(members, tx, jax.random.PRNGKey(1), evolution, make_mesh(),
                                  critic=critic)   # the step does not donate: no copies
  rng = np.random.default_rng(0)
  split = ImageSet.from_fields({"image": rng.integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.uint8)})
  hook = evolution_hook(_score, EvolutionConfig(neighbours=2, crossover_prob=1.0,
                                                mutation_prob=1.0, mutation_rate=0.5),
                        ("distortion", "perception"), higher_is_better=False)
  return fit(state, step, split, loop=LoopConfig(epochs=2, batch_size=4, log_every_steps=100,
                                                 checkpoint_every_steps=100, max_steps=max_steps),
             mesh=make_mesh(), workdir=str(tmp_path), name="population", on_epoch_end=hook)


def test_a_crash_after_an_evolutionary_epoch_resumes_the_discriminators_exactly(tmp_path):
  setup = _setup()
  straight = _fit(tmp_path / "straight", setup)
  assert int(straight.evolution.generation) == 2
  assert not np.allclose(straight.critic["params"]["Dense_1"]["kernel"],
                         setup[4]["params"]["Dense_1"]["kernel"])        # they trained
  _fit(tmp_path / "crashed", setup, max_steps=1)   # evolved after step 1, then stopped
  resumed = _fit(tmp_path / "crashed", setup)
  assert int(resumed.step) == 2
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(straight)[0],
                          jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


@pytest.mark.long
def test_members_and_discriminators_shard_over_the_population_axis(run_on_eight_cpu_devices):
  """Restorers and their discriminators split over a 'population' mesh axis train
  exactly as on one device (tests/population_adversarial_sharding_check.py on 8
  simulated CPU devices)."""
  run_on_eight_cpu_devices("population_adversarial_sharding_check.py",
                           "adversarial population sharding OK")
