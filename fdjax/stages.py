"""Training stages as library functions, each a call of ``train_stage`` with its
own loss function: the one loop (``fdjax.train.fit``) and the one step serve all.

Layout under a run's (per-seed) workdir::

    clean/ experts/<deg>/ fusing/ vanilla/ scratch/ fusiondistill/   trained stages
      checkpoints/<step>/   TrainState checkpoints (resume)
      variables/            final {'params','batch_stats'}: its presence = stage complete
      metrics.jsonl
    fused/<bn_mode>/variables   weight soups (no training)

Resume order, in one place: a stage with ``variables/`` is reused as is; else a
stage with checkpoints resumes from the latest; else it starts from its init
(an earlier stage's variables, or a fresh init from the seed).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from fdjax import data as data_lib
from fdjax import distill
from fdjax.eval.predict import accuracy, make_predict
from fdjax.models import cifar_resnet
from fdjax.train import (Checkpointer, LoopConfig, create_train_state, data_sharding, fit,
                         init_variables, make_mesh, make_optimizer, make_train_step)
from fdjax.train import objectives
from fdjax.train.variables_io import load_variables, save_variables, variables_exist

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass
class RunContext:
  """What every stage of one run (one seed) shares."""

  config: ml_collections.ConfigDict
  workdir: str
  seed: int
  dataset: data_lib.Dataset
  mesh: jax.sharding.Mesh
  model: object

  @property
  def degradations(self) -> tuple[str, ...]:
    return tuple(n.strip() for n in self.config.degradations.split(",") if n.strip())

  def stage_dir(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def template_variables(self, model=None) -> dict:
    """Shapes and dtypes (no values) of ``model``'s variables (default: the dense model)."""
    model = model or self.model
    return jax.eval_shape(lambda: init_variables(model, jax.random.key(0),
                                                 self.dataset.image_shape))


def build_model(config: ml_collections.ConfigDict, num_classes: int):
  if config.model.dtype not in DTYPES:
    raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {config.model.dtype!r}")
  return cifar_resnet(config.model.depth, num_classes, config.model.head,
                      dtype=DTYPES[config.model.dtype])


def load_dataset(config: ml_collections.ConfigDict, seed: int) -> data_lib.Dataset:
  d = config.data
  return data_lib.load(d.source, validation_fraction=d.validation_fraction, seed=seed,
                       cache_dir=d.cache_dir or None, data_dir=d.data_dir or None,
                       max_per_split=d.max_per_split or None)


def make_context(config: ml_collections.ConfigDict, workdir: str, seed: int | None = None,
                 dataset: data_lib.Dataset | None = None) -> RunContext:
  """Loads the data set (unless given) and builds the model and mesh for ``config``."""
  seed = config.seed if seed is None else seed
  dataset = dataset or load_dataset(config, seed)
  os.makedirs(workdir, exist_ok=True)
  return RunContext(config, workdir, seed, dataset, make_mesh(),
                    build_model(config, dataset.num_classes))


def stage_variables_path(ctx: RunContext, name: str) -> str:
  return os.path.join(ctx.stage_dir(name), "variables")


def is_complete(ctx: RunContext, name: str) -> bool:
  return variables_exist(stage_variables_path(ctx, name))


def load_stage(ctx: RunContext, name: str, model=None) -> dict:
  return load_variables(stage_variables_path(ctx, name), ctx.template_variables(model))


def train_stage(ctx: RunContext, name: str, stage_cfg: ml_collections.ConfigDict, loss_fn, *,
                init: dict | None = None, frozen=None, images_per_step: int | None = None,
                passes_per_epoch: int = 1, selection_degrade=None, max_steps: int = 0,
                model=None, grad_fn=None, wrap_tx=None) -> dict:
  """Trains one stage (or reuses/resumes it) and returns its ``{'params','batch_stats'}``.

  Args:
    init: starting variables (an earlier stage's) or None for a fresh init from the seed.
    frozen: read-only teacher variables passed to every step.
    images_per_step: data-set images per step (default ``config.batch_size``).
    passes_per_epoch: an epoch visits the training split this many times; combined-
      degradation stages use one pass per degradation, as the reference iterates one
      full loader per degradation each epoch.
    selection_degrade: with ``config.selection == 'val'``, ``degrade(key, images)`` for
      the validation accuracy that picks the best epoch.
    max_steps: stop after this many steps (simulates a crash in tests).
    model: the network trained (default: the run's dense model; e.g. a MoE student).
    grad_fn, wrap_tx: per-task gradients and the optax transformation that combines
      them (gradient homogenization); see ``make_train_step``.
  """
  model = model or ctx.model
  if is_complete(ctx, name):
    logging.info("[%s] complete; reusing %s", name, stage_variables_path(ctx, name))
    return load_stage(ctx, name, model)
  config, stage_dir = ctx.config, ctx.stage_dir(name)
  batch_size = images_per_step or config.batch_size
  train_split = ctx.dataset.train
  if passes_per_epoch > 1:
    train_split = data_lib.ImageSet(*_tile(train_split, passes_per_epoch))
  steps_per_epoch = data_lib.num_batches(len(train_split), batch_size, drop_remainder=True)
  tx, schedule = make_optimizer(stage_cfg.optimizer, epochs=stage_cfg.epochs,
                                steps_per_epoch=max(steps_per_epoch, 1))
  if wrap_tx is not None:
    tx = wrap_tx(tx)
  seed_key = jax.random.PRNGKey(ctx.seed)
  if init is None:
    init = init_variables(model, jax.random.fold_in(seed_key, 0), ctx.dataset.image_shape)
  stage_rng = jax.random.fold_in(seed_key, _stable_id(name))
  state = create_train_state(init, tx, stage_rng, ctx.mesh)
  checkpointer = Checkpointer(os.path.join(stage_dir, "checkpoints"),
                              max_to_keep=config.checkpoint.keep)
  loop = LoopConfig(epochs=stage_cfg.epochs, batch_size=batch_size, seed=ctx.seed,
                    log_every_steps=config.log_every_steps,
                    checkpoint_every_steps=config.checkpoint.every_steps, max_steps=max_steps)
  selector = _BestOnValidation(ctx, name, selection_degrade, model) if (
      config.selection == "val" and ctx.dataset.validation is not None) else None
  if config.selection not in ("last", "val"):
    raise ValueError(f"selection must be 'last' or 'val', got {config.selection!r}")
  step_fn = make_train_step(loss_fn, tx, ctx.mesh, **({"grad_fn": grad_fn} if grad_fn else {}))
  state = fit(state, step_fn, train_split, loop=loop,
              mesh=ctx.mesh, workdir=stage_dir, schedule=schedule, name=name,
              checkpointer=checkpointer, frozen=frozen,
              on_epoch_end=selector.on_epoch_end if selector else None)
  if int(state.step) < stage_cfg.epochs * steps_per_epoch:
    return state.variables  # stopped early on request (max_steps): not complete
  variables = selector.best() if selector else state.variables
  save_variables(stage_variables_path(ctx, name), variables)
  return load_stage(ctx, name, model)


def _tile(split: data_lib.ImageSet, times: int):
  return np.concatenate([split.images] * times), np.concatenate([split.labels] * times)


def _stable_id(name: str) -> int:
  return sum((i + 1) * ord(c) for i, c in enumerate(name)) % (2**31 - 1)


class _BestOnValidation:
  """Keeps the variables of the epoch with the best held-out validation accuracy."""

  def __init__(self, ctx: RunContext, name: str, degrade, model):
    self.ctx, self.degrade, self.model = ctx, degrade, model
    self.path = os.path.join(ctx.stage_dir(name), "best")
    self.record_path = os.path.join(ctx.stage_dir(name), "best.json")
    self.predict = make_predict(model, ctx.config.data.normalization, ctx.mesh)
    self.key = jax.random.PRNGKey(ctx.config.eval.seed)

  def on_epoch_end(self, state, epoch: int) -> dict:
    transform = None
    if self.degrade is not None:
      degrade = jax.jit(self.degrade)
      transform = lambda i, images: degrade(jax.random.fold_in(self.key, i), images)
    val = accuracy(self.predict, state.variables, self.ctx.dataset.validation,
                   batch_size=self.ctx.config.eval_batch_size, mesh=self.ctx.mesh,
                   transform=transform)
    best = self._record()
    if best is None or val > best["val_accuracy"]:
      shutil.rmtree(self.path, ignore_errors=True)
      save_variables(self.path, state.variables)
      with open(self.record_path, "w") as f:
        json.dump({"epoch": epoch + 1, "val_accuracy": val}, f)
    return {"val_accuracy": val}

  def _record(self):
    if os.path.exists(self.record_path):
      with open(self.record_path) as f:
        return json.load(f)
    return None

  def best(self) -> dict:
    logging.info("selected epoch %s by validation accuracy", self._record())
    return load_variables(self.path, self.ctx.template_variables(self.model))


# ----------------------------------------------------------------------------- stages


def _augment(ctx):
  return dict(normalization=ctx.config.data.normalization, augment_cfg=ctx.config.augment)


def clean_stage(ctx: RunContext, *, max_steps: int = 0) -> dict:
  """Stage 1: the base model trained on clean images with cross-entropy."""
  loss_fn = objectives.classification_loss(ctx.model, **_augment(ctx))
  return train_stage(ctx, "clean", ctx.config.clean, loss_fn, max_steps=max_steps)


def expert_stage(ctx: RunContext, degradation: str, clean_variables: dict) -> dict:
  """Stage 2: one expert per degradation, from the clean model (ILIAC or plain CE)."""
  cfg = ctx.config.experts
  degrade = distill.single(degradation)
  if cfg.loss == "iliac":
    loss_fn = distill.expert_loss(ctx.model, degrade=degrade, feature=ctx.config.distill_feature,
                                  cos_weight=cfg.cos_weight, **_augment(ctx))
    frozen = clean_variables
  elif cfg.loss == "ce":
    loss_fn = objectives.classification_loss(ctx.model, degrade=degrade, **_augment(ctx))
    frozen = None
  else:
    raise ValueError(f"experts.loss must be 'iliac' or 'ce', got {cfg.loss!r}")
  return train_stage(ctx, f"experts/{degradation}", cfg, loss_fn, init=clean_variables,
                     frozen=frozen, selection_degrade=degrade)


def combined_ce_stage(ctx: RunContext, name: str, init: dict | None) -> dict:
  """Scratch (init None), Vanilla FT (init clean) and Fusing (init fused): CE on
  combined degradations, one ``batch_size`` share per degradation."""
  degrade = distill.combined(ctx.degradations)
  loss_fn = objectives.classification_loss(ctx.model, degrade=degrade, **_augment(ctx))
  n = len(ctx.degradations)
  return train_stage(ctx, name, ctx.config[name], loss_fn, init=init,
                     images_per_step=n * ctx.config.batch_size, passes_per_epoch=n,
                     selection_degrade=degrade)


def fusiondistill_stage(ctx: RunContext, fused_variables: dict,
                        expert_variables: Sequence[dict]) -> dict:
  """Stage 4: the fused model distilled from the frozen experts on combined degradations."""
  cfg, n = ctx.config.fusiondistill, len(ctx.degradations)
  degrade = distill.combined(ctx.degradations)
  loss_fn = distill.fusiondistill_loss(ctx.model, degrade=degrade, num_experts=n,
                                       feature=ctx.config.distill_feature, alpha=cfg.alpha,
                                       gammas=[cfg.gamma] * n, **_augment(ctx))
  return train_stage(ctx, "fusiondistill", cfg, loss_fn, init=fused_variables,
                     frozen=distill.stack_variables(expert_variables),
                     images_per_step=n * ctx.config.batch_size, passes_per_epoch=n,
                     selection_degrade=degrade)


SOUPS = ("uniform", "weighted", "greedy")
BN_MODES = ("paper", "average", "reestimate")


def fused_stage(ctx: RunContext, expert_variables: Sequence[dict], bn_mode: str) -> dict:
  """Stage 3: a soup of the experts (``fusion.soup``) with BatchNorm statistics per
  ``bn_mode``: 'paper' keeps the first expert's, 'average' averages them, 'reestimate'
  averages then re-estimates them on combined-degradation training batches.

  Soups: 'uniform' (the paper), 'weighted' (``fusion.weights``, one per expert) and
  'greedy' (Wortsman et al.: experts added in order of held-out accuracy while the
  held-out accuracy does not drop; held out = the validation split under combined
  degradations; the chosen experts are logged and saved in ``greedy.json``).
  """
  from fdjax import fusion

  cfg = ctx.config.fusion
  if cfg.soup not in SOUPS:
    raise ValueError(f"fusion.soup must be one of {SOUPS}, got {cfg.soup!r}")
  if bn_mode not in BN_MODES:
    raise ValueError(f"fusion BatchNorm mode must be one of {BN_MODES}, got {bn_mode!r}")
  stage_dir = ctx.stage_dir(f"fused/{bn_mode}")
  path = os.path.join(stage_dir, "variables")
  if variables_exist(path):
    return load_variables(path, ctx.template_variables())
  stats = "paper" if bn_mode == "paper" else "average"
  if cfg.soup == "uniform":
    fused = fusion.uniform_soup(expert_variables, batch_stats=stats)
  elif cfg.soup == "weighted":
    weights = [float(w) for w in str(cfg.weights).split(",") if w.strip()]
    fused = fusion.weighted_soup(expert_variables, weights, batch_stats=stats)
  else:
    fused, chosen = fusion.greedy_soup(expert_variables, _held_out_score(ctx), batch_stats=stats)
    os.makedirs(stage_dir, exist_ok=True)
    with open(os.path.join(stage_dir, "greedy.json"), "w") as f:
      json.dump({"chosen": [ctx.degradations[i] for i in chosen]}, f)
    logging.info("greedy soup (%s BatchNorm) chose %s", bn_mode,
                 [ctx.degradations[i] for i in chosen])
  if bn_mode == "reestimate":
    fused = fusion.reestimate_batch_stats(ctx.model, fused, _degraded_train_batches(ctx),
                                          normalization=ctx.config.data.normalization)
  save_variables(path, fused)
  return load_variables(path, ctx.template_variables())


def _held_out_score(ctx: RunContext):
  """Accuracy on the validation split under combined degradations (fixed keys)."""
  if ctx.dataset.validation is None:
    raise ValueError("fusion.soup='greedy' needs a held-out split: set "
                     "data.validation_fraction > 0")
  predict = make_predict(ctx.model, ctx.config.data.normalization, ctx.mesh)
  degrade = jax.jit(distill.combined(ctx.degradations))
  key = jax.random.PRNGKey(ctx.config.eval.seed)
  n = len(ctx.degradations)
  batch_size = ctx.config.eval_batch_size - ctx.config.eval_batch_size % n

  def transform(index, images):
    return degrade(jax.random.fold_in(key, index), images)

  return lambda variables: accuracy(predict, variables, ctx.dataset.validation,
                                    batch_size=batch_size, mesh=ctx.mesh, transform=transform)


def _degraded_train_batches(ctx: RunContext):
  """Up to ``fusion.reestimate_batches`` combined-degradation training batches, fixed keys."""
  n = len(ctx.degradations)
  degrade = jax.jit(distill.combined(ctx.degradations))
  key = jax.random.PRNGKey(ctx.seed + 12345)
  batches = data_lib.train_batches(ctx.dataset.train, n * ctx.config.batch_size, seed=ctx.seed,
                                   epoch=0, sharding=data_sharding(ctx.mesh))
  for i, batch in enumerate(batches):
    if i >= ctx.config.fusion.reestimate_batches:
      return
    yield degrade(jax.random.fold_in(key, i), batch["image"])


def moe_student(config: ml_collections.ConfigDict, num_classes: int, k: int):
  """The mixture-of-experts student of ``config.moe`` (one expert per degradation of
  ``config.degradations``) with top-``k`` routing."""
  from fdjax import moe

  cfg = config.moe
  names = [n for n in config.degradations.split(",") if n.strip()]
  return moe.moe_resnet(config.model.depth, num_classes, config.model.head,
                        num_experts=len(names), k=k,
                        moe_stages=tuple(s.strip() for s in cfg.stages.split(",") if s.strip()),
                        routing=cfg.routing, dispatch=cfg.dispatch, num_prompts=cfg.num_prompts,
                        channel_sharing=cfg.channel_sharing, expert_loop=cfg.expert_loop,
                        dtype=DTYPES[config.model.dtype])


def fusiondistill_moe_stage(ctx: RunContext, fused_variables: dict,
                            expert_variables: Sequence[dict]):
  """FusionDistill with a mixture-of-experts student (experts from the per-degradation
  models, shared parts from the fused model), trained by the same step-4 loss plus the
  router's balance loss; optional gradient homogenization. Returns ``(model, variables)``.

  The student trains with top-``moe.train_k`` routing: with K=1 the single kept gate is
  renormalised to exactly 1 and the router would learn from the balance loss alone.
  The variables do not depend on K, so the same student is evaluated at every K in
  ``moe.ks`` with ``model.clone(k=K)``.
  """
  from fdjax import moe

  cfg, n = ctx.config.moe, len(ctx.degradations)
  k = cfg.train_k
  model = moe_student(ctx.config, ctx.dataset.num_classes, k)
  init = moe.moe_variables(model, fused_variables, expert_variables,
                           jax.random.fold_in(jax.random.PRNGKey(ctx.seed), 1000 + k),
                           ctx.dataset.image_shape)
  degrade = distill.combined(ctx.degradations)
  loss_fn = distill.fusiondistill_loss(
      model, degrade=degrade, num_experts=n, feature=ctx.config.distill_feature,
      alpha=cfg.alpha, gammas=[cfg.gamma] * n, teacher_model=ctx.model,
      aux_loss_weight=cfg.balance_weight, **_augment(ctx))
  grad_fn = wrap_tx = None
  if cfg.homogenize != "none":
    grad_fn = moe.per_task_value_and_grad(n)
    wrap_tx = lambda tx: optax.chain(moe.homogenize(cfg.homogenize, shared=_shared_param), tx)  # noqa: E731
  variables = train_stage(ctx, "fusiondistill_moe", cfg, loss_fn, init=init,
                          frozen=distill.stack_variables(expert_variables),
                          images_per_step=n * ctx.config.batch_size, passes_per_epoch=n,
                          selection_degrade=degrade, model=model, grad_fn=grad_fn,
                          wrap_tx=wrap_tx)
  return model, variables


def _shared_param(path: str) -> bool:
  """False for the stacked expert copies ('.../stage3_moe/experts/...'), True otherwise."""
  parts = path.split("/")
  return not any(a.endswith("_moe") and b == "experts" for a, b in zip(parts, parts[1:]))
