"""EA-Adam's restoration objectives: distortion (L1) and perception (an adversarial loss
against a discriminator per member, trained from scratch in the same step).

Objective 0, distortion: the task's per-image loss (L1 in 0..1 units) of the restored
image against the clean target. Objective 1, perception: the relativistic average GAN
loss (RaGAN, Jolicoeur-Martineau 2018, as ESRGAN and BasicSR's ESRGAN model train
super-resolution) of the member's discriminator. RaGAN rather than the standard
non-saturating loss because the generator's gradient then comes from real AND fake
logits (``D(x_r) - mean D(x_f)`` and ``D(x_f) - mean D(x_r)``), which keeps a
discriminator trained from scratch on a few hundred patches from saturating and
starving the generator; it is also what the perceptual SR baselines use.

With logits ``r = D(real)`` and ``f = D(fake)`` per image, ``softplus`` = BCE with logits::

    L_D = 1/2 [mean softplus(-(r - mean f)) + mean softplus(f - mean r)]
    L_G = 1/2 [mean softplus(r - mean f) + mean softplus(-(f - mean r))]

Images enter the discriminator in model space (0..1; the generator's unclipped output).

The step (``adversarial_loss``): every member carries ``{'batch_stats', 'critic':
{'params', 'opt_state'}}`` (``PopulationState.loss_carry``); the member's loss function
runs its generator once, updates its discriminator by one optimiser step on the current
output (no gradient reaches the generator: the fake images are ``stop_gradient``'d),
then scores that output with the UPDATED discriminator for ``L_G``. So one jitted
engine step does "discriminator update, then generator update" for all P members, and
the discriminators are checkpointed with the population.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fdjax.train.objectives import train_apply, with_regularizer

DISTORTION, PERCEPTION = "distortion", "perception"


class Discriminator(nn.Module):
  """Image float ``[B, H, W, 3]`` in 0..1 -> one logit per image ``[B]``.

  ``depth`` stages of (3x3 conv, 4x4 stride-2 conv), ``width`` x 2^i channels, leaky
  ReLU 0.2, global average pool, a hidden dense layer; no normalisation layers (the
  batch is small and the carry holds no statistics).
  """

  width: int = 16
  depth: int = 3

  @nn.compact
  def __call__(self, x):
    h = 2.0 * jnp.asarray(x, jnp.float32) - 1.0
    for i in range(self.depth):
      h = nn.leaky_relu(nn.Conv(self.width * 2 ** i, (3, 3))(h), 0.2)
      h = nn.leaky_relu(nn.Conv(self.width * 2 ** i, (4, 4), strides=(2, 2))(h), 0.2)
    h = nn.leaky_relu(nn.Dense(self.width * 4)(jnp.mean(h, axis=(1, 2))), 0.2)
    return nn.Dense(1)(h)[:, 0]


def ragan_d_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Scalar RaGAN discriminator loss (module docstring); logits ``[B]``."""
  real_rel = real_logits - jnp.mean(fake_logits)
  fake_rel = fake_logits - jnp.mean(real_logits)
  return 0.5 * (jnp.mean(jax.nn.softplus(-real_rel)) + jnp.mean(jax.nn.softplus(fake_rel)))


def ragan_g_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Scalar RaGAN generator loss: the discriminator loss with the labels swapped."""
  return ragan_d_loss(fake_logits, real_logits)


def critic_optimizer(lr: float) -> optax.GradientTransformation:
  """The discriminators' optimiser: Adam (b1 0.9, b2 0.99, as ESRGAN), constant ``lr``."""
  return optax.adam(lr, b1=0.9, b2=0.99)


def init_critic(discriminator: Discriminator, tx: optax.GradientTransformation, key,
                count: int, image_shape) -> dict:
  """``{'params', 'opt_state'}`` of ``count`` fresh discriminators stacked on axis 0
  (every leaf ``[count, ...]``, the Adam step counters included), one key each."""

  def one(k):
    params = discriminator.init(k, jnp.zeros((1, *image_shape), jnp.float32))["params"]
    return {"params": params, "opt_state": tx.init(params)}

  return jax.jit(jax.vmap(one))(jax.random.split(key, count))


def adversarial_loss(model, task, degrade, discriminator: Discriminator,
                     critic_tx: optax.GradientTransformation):
  """A single member's loss function for the population step
  (``fdjax.population.gradients.population_grad_fn``):
  ``loss_fn(params, carry, batch, key) -> (loss, (carry, metrics))`` with ``carry``
  ``{'batch_stats', 'critic'}`` and ``metrics['task_losses']`` = ``[L1, L_G]``
  (objectives distortion, perception), each plus the model's ``features['regularizer']``
  when it returns one; ``loss`` is their mean (reported only: the
  population step differentiates each objective separately). Also reports
  ``d_loss`` (before the discriminator's update) and the task's training metrics."""

  def loss_fn(params, carry, batch, key):
    student_input, target, _ = task.views(key, batch, degrade)
    outputs, features, batch_stats = train_apply(model, task, params, carry["batch_stats"],
                                                 student_input)
    real = task.model_input(target)
    critic = carry["critic"]
    fake = jax.lax.stop_gradient(outputs)

    def d_loss_fn(d_params):
      return ragan_d_loss(discriminator.apply({"params": d_params}, real),
                          discriminator.apply({"params": d_params}, fake))

    d_loss, d_grads = jax.value_and_grad(d_loss_fn)(critic["params"])
    d_updates, d_opt_state = critic_tx.update(d_grads, critic["opt_state"], critic["params"])
    d_params = jax.lax.stop_gradient(optax.apply_updates(critic["params"], d_updates))
    real_logits = jax.lax.stop_gradient(discriminator.apply({"params": d_params}, real))
    fake_logits = discriminator.apply({"params": d_params}, outputs)
    # The model's regularizer (MEASNet's balance loss) in both objectives, as share_losses.
    losses = with_regularizer(jnp.stack([jnp.mean(task.per_example_loss(outputs, target)),
                                         ragan_g_loss(real_logits, fake_logits)]), features)
    new_carry = {"batch_stats": batch_stats,
                 "critic": {"params": d_params, "opt_state": d_opt_state}}
    return jnp.mean(losses), (new_carry, {"task_losses": losses, "d_loss": d_loss,
                                          **task.train_metrics(outputs, target)})

  return loss_fn
