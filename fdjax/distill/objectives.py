"""Loss functions with frozen teachers, for the generic train step.

* ``expert_loss`` (stage 2, the ILIAC recipe): the expert sees the degraded view,
  the frozen clean model sees the clean view of the same image (same flip and
  crop); loss = ``ce_weight * CE + cos_weight * (1 - cos)`` on one feature map.
* ``fusiondistill_loss`` (stage 4): the batch holds one equal share per
  degradation; share i is degraded by degradation i for the student and shown
  to frozen expert i (the task's teacher view); loss = ``alpha * CE + sum_i gamma_i *
  (1 - cos_i)``, plus ``output_weight * mean_i d(student, expert_i)`` on the outputs
  when asked (response distillation; ``d`` = ``task.output_distance``).
  When the experts share one architecture (always, here) their variables are
  stacked on a leading axis and their forward passes run as one ``vmap``
  (``apply_experts``: unrolled on CPU, where that is 5x faster).

``frozen`` (the step's read-only argument) holds the teachers' variables. Both add the
student's ``features['regularizer']`` when it has one (``fdjax.train.objectives``).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from fdjax.distill.losses import cosine_distance
from fdjax.errors import ConfigError
from fdjax.tasks.base import DegradeFn
from fdjax.train.objectives import check_balance, share_weights, train_apply, with_regularizer
from fdjax.trees import stack_trees, unstack_tree


# The branch of a step key that the student's own PRNG streams come from. A task's
# views split the step key (``split(key, n)``), and with JAX's partitionable Threefry
# (the default since JAX 0.5) ``split(key, n)[i] == fold_in(key, i)``: a stream folded
# in at a small index would be the very key a view degrades or flips with.
_STREAMS_BRANCH = 0x5EED


def stream_keys(key: jax.Array, names: Sequence[str]) -> dict[str, jax.Array]:
  """``{name: key}`` for the PRNG streams a student draws from in training (``rngs`` of
  ``model.apply``), each its own key on a branch of the step ``key`` that no training
  view uses."""
  branch = jax.random.fold_in(key, _STREAMS_BRANCH)
  return {name: jax.random.fold_in(branch, i) for i, name in enumerate(names)}


def apply_experts(fn, stacked, inputs):
  """``[fn(expert_i, inputs[i]) for i]`` stacked, for variables stacked on axis 0
  (``fdjax.trees.stack_trees``).

  ``inputs`` is stacked on axis 0 as well (broadcast one array to N copies to give
  every expert the same input). On GPU/TPU this is one ``vmap``.
  On XLA:CPU a vmap over stacked convolution weights becomes a grouped convolution,
  measured 5x slower than N plain ones (ResNet-20, 4 experts x 64 images: 2.58 s vs
  0.51 s), so there the N calls are unrolled in the one program.
  """
  if jax.default_backend() != "cpu":
    return jax.vmap(fn)(stacked, inputs)
  n = jax.tree.leaves(stacked)[0].shape[0]
  return stack_trees([fn(unstack_tree(stacked, i), unstack_tree(inputs, i)) for i in range(n)])


def pick(features: dict, feature: str, model) -> jax.Array:
  """``features[feature]``; a ConfigError naming what ``model`` returns when it lacks it
  (a model whose ``feature_names`` lists a feature it does not return)."""
  if feature not in features:
    raise ConfigError(f"distill_feature {feature!r}: {type(model).__name__} returns the "
                      f"features {sorted(features)}, though its feature_names lists it",
                      hint="set --config.distill_feature to one of those, or make the "
                           "model's feature_names list only what it returns")
  return features[feature]


def expert_loss(model, task, *, degrade: DegradeFn, feature: str = "stage3",
                ce_weight: float = 1.0, cos_weight: float = 1.0):
  """ILIAC expert training against the frozen clean model (``frozen`` = its variables).

  The expert sees the task's degraded view, the frozen clean model the clean view of
  the same image (same flip and crop); loss = ``ce_weight * task loss + cos_weight *
  (1 - cos)`` on ``features[feature]``.
  """

  def loss_fn(params, batch_stats, batch, key, frozen):
    student_input, target, teacher_input = task.views(key, batch, degrade)
    outputs, features, batch_stats = train_apply(model, task, params, batch_stats, student_input)
    _, teacher_features = model.apply(frozen, task.model_input(teacher_input), train=False)
    ce = jnp.mean(task.per_example_loss(outputs, target))
    cos = cosine_distance(pick(features, feature, model),
                          jax.lax.stop_gradient(pick(teacher_features, feature, model)))
    loss = with_regularizer(ce_weight * ce + cos_weight * cos, features)
    return loss, (batch_stats,
                  {"ce": ce, "cos": cos, **task.train_metrics(outputs, target)})

  return loss_fn


def fusiondistill_loss(model, task, *, degrade: DegradeFn, num_experts: int,
                       feature: str = "stage3", alpha: float = 0.1,
                       gammas: float | Sequence[float] = 1.0, teacher_model=None,
                       aux_loss_weight: float = 0.0, router_weight: float = 0.0,
                       rng_streams: Sequence[str] = (), balance: str = "none",
                       output_weight: float = 0.0):
  """Stage 4. ``frozen`` = expert variables stacked on a leading axis of size ``num_experts``.

  ``degrade`` must degrade share i of the batch with degradation i (see
  ``LevelPlan.combined``). The batch size must be a multiple of ``num_experts``; the
  shares are its consecutive equal slices.

  ``gammas``: the feature term's weight, one per expert or one float for all.
  ``teacher_model`` (default: ``model``) is the experts' architecture, for students of
  another kind (mixture-of-experts). If the student's features hold ``aux_loss`` (a
  router's balance loss), ``aux_loss_weight * aux_loss`` is added. The per-share
  terms are reported as metric ``task_losses`` ``[num_experts]``.

  ``router_weight`` > 0 (router supervision): the student's ``features['router_logits']``
  (``[B, E]``, or ``[B, H, W, E]`` averaged over pixels) get a cross-entropy against the
  degradation index of each share (share i = degradation i = expert i), weighted by
  ``router_weight`` and added to the loss (metrics ``router_ce``, ``router_acc``).
  ``rng_streams``: PRNG streams the student draws from in training (e.g. ``'gating'``
  for noisy top-K), each from ``stream_keys`` (a branch of the step key that no
  training view draws from). ``balance``: how the shares'
  task losses are weighted (``fdjax.train.objectives.share_weights``; the metric ``ce``
  stays the plain mean). ``output_weight`` > 0: each share's mean
  ``task.output_distance(student outputs, expert i's outputs)`` (restoration: L1 or
  Charbonnier between the images; classification: KL of the softmaxes), times
  ``output_weight / num_experts``, is added to task i's loss: the loss gains
  ``output_weight`` times the mean over the shares, scaled as the task term (metric
  ``kd``: that mean).
  """
  check_balance(balance)  # a bad mode fails when the loss is built, not in the step
  if output_weight < 0:
    raise ValueError(f"output_weight must be >= 0, got {output_weight}")
  teacher_model = teacher_model or model
  gammas = jnp.asarray(gammas, jnp.float32)
  if gammas.ndim == 0:   # one gamma for every expert
    gammas = jnp.full((num_experts,), gammas)
  if gammas.shape != (num_experts,):
    raise ValueError(f"need one gamma per expert ({num_experts}) or one for all, got "
                     f"{gammas.shape[0]}")

  def shares(x):
    return x.reshape(num_experts, x.shape[0] // num_experts, *x.shape[1:])

  def loss_fn(params, batch_stats, batch, key, frozen):
    student_input, target, teacher_input = task.views(key, batch, degrade)
    rngs = stream_keys(key, rng_streams)
    outputs, features, batch_stats = train_apply(model, task, params, batch_stats, student_input,
                                                 **({"rngs": rngs} if rngs else {}))

    def teacher(variables, images):
      teacher_outputs, teacher_features = teacher_model.apply(variables, images, train=False)
      return teacher_outputs, pick(teacher_features, feature, teacher_model)

    teacher_outputs, teacher_features = jax.lax.stop_gradient(
        apply_experts(teacher, frozen, shares(task.model_input(teacher_input))))
    cos_per_expert = jax.vmap(cosine_distance)(shares(pick(features, feature, model)),
                                               teacher_features)
    ce_per_share = jnp.mean(task.per_example_loss(shares(outputs), shares(target)), axis=1)
    ce = jnp.mean(ce_per_share)  # equal shares: the mean over the whole batch
    # Task i = degradation i: its share of the CE plus its distillation term; they sum to
    # the loss, and gradient homogenization (fdjax.moe) differentiates them one by one.
    weighted_ce = share_weights(ce_per_share, balance) * ce_per_share
    task_losses = alpha * weighted_ce / num_experts + gammas * cos_per_expert
    metrics = {"ce": ce, "cos": jnp.mean(cos_per_expert)}
    if output_weight:
      kd_per_share = jnp.mean(task.output_distance(shares(outputs), teacher_outputs), axis=1)
      task_losses = task_losses + output_weight * kd_per_share / num_experts
      metrics["kd"] = jnp.mean(kd_per_share)
    loss = with_regularizer(jnp.sum(task_losses), features)
    metrics.update(task_losses=task_losses, **task.train_metrics(outputs, target))
    if aux_loss_weight and "aux_loss" in features:
      loss = loss + aux_loss_weight * features["aux_loss"]
      metrics["aux_loss"] = features["aux_loss"]
    if router_weight:
      router_ce, router_acc = router_supervision(features["router_logits"], num_experts)
      loss = loss + router_weight * router_ce
      metrics.update(router_ce=router_ce, router_acc=router_acc)
    return loss, (batch_stats, metrics)

  return loss_fn


def router_supervision(router_logits, num_shares: int):
  """``(cross-entropy, accuracy)`` of per-image router logits ``[B, E]`` (per-pixel
  ``[B, H, W, E]``: averaged over pixels first) against the share index of each image:
  the batch is ``num_shares`` equal consecutive shares, share i labelled i."""
  logits = router_logits.astype(jnp.float32)
  if logits.ndim > 2:
    logits = jnp.mean(logits, axis=tuple(range(1, logits.ndim - 1)))
  targets = jnp.repeat(jnp.arange(num_shares), logits.shape[0] // num_shares)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  ce = -jnp.mean(jnp.take_along_axis(log_probs, targets[:, None], axis=-1))
  return ce, jnp.mean(jnp.argmax(logits, axis=-1) == targets)
