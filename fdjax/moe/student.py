"""The mixture-of-experts student of FusionDistill-MoE: its module from the config,
its training stage, and which parameters gradient homogenization treats as shared.

The task builds its own student and its initial variables (``Task.moe_student``,
``Task.moe_variables``): classification the ``MoEResNet`` below, restoration the U-Net
student of ``fdjax.moe.unet_student``; both name routed parts ``<part>_moe`` with
``router`` and ``experts`` inside, which ``shared_param`` and ``router_param`` rely on.

The student's experts start from the per-degradation models and its shared parts from
the fused model; it trains with the FusionDistill loss plus the router's balance loss
(optionally with MUIRF gradient homogenization), with top-``moe.train_k`` routing: with
K=1 the single kept gate is renormalised to exactly 1 and the router would learn from
the balance loss alone. The variables do not depend on K, so one trained student is
evaluated at every K of ``moe.ks`` with ``model.clone(k=K)``.

Router options (issue 11): ``moe.router_input`` ('stage' = the routed stage's input,
'image', 'stem'), ``moe.noisy_gating`` (Shazeer's noisy top-K in training, PRNG
stream 'gating'), ``moe.prompt_init_scale`` (x the expert prompts' init std 0.02),
``moe.router_lr_scale`` (the router's updates, ``*_moe/router/*``, scaled after the
optimiser: a learning-rate multiplier for the router), ``moe.router_supervision``
(weight of the router-logits cross-entropy against each share's degradation, see
``fdjax.distill.fusiondistill_loss``). The defaults train exactly as before.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from fdjax import distill, tasks
from fdjax.config import parse_list
from fdjax.moe.homogenize import homogenized_recipe
from fdjax.moe.model import moe_resnet
from fdjax.tasks.classification import model_dtype
from fdjax.train.checkpoint import path_str
from fdjax.train.objectives import task_balance
from fdjax.trees import stack_trees

STAGE = "fusiondistill_moe"


def moe_student(config: ml_collections.ConfigDict, data_spec, k: int, task=None):
  """The student of ``config.moe`` (one expert per degradation of ``config.degradations``)
  with top-``k`` routing, for ``data_spec`` (``fdjax.tasks.DataSpec``): what the task
  (default: ``config.task``'s) builds with its ``moe_student`` hook (the CIFAR ResNet
  student of ``resnet_student``, the restoration U-Net student of
  ``fdjax.moe.unet_student.restoration_student``)."""
  task = task or tasks.from_config(config)
  return task.moe_student(config, data_spec, k)


def resnet_student(config: ml_collections.ConfigDict, num_classes: int, k: int):
  """The classification student: ``MoEResNet`` of ``config.model`` and ``config.moe``.
  Router fields missing from ``config.moe`` (a run saved before they existed) take their
  defaults."""
  cfg = config.moe
  names = parse_list(config.degradations)
  return moe_resnet(config.model.depth, num_classes, config.model.head,
                    num_experts=len(names), k=k,
                    moe_stages=tuple(parse_list(cfg.stages)),
                    routing=cfg.routing, dispatch=cfg.dispatch, num_prompts=cfg.num_prompts,
                    channel_sharing=cfg.channel_sharing, expert_loop=cfg.expert_loop,
                    router_source=router_source(cfg.get("router_input", "stage")),
                    noisy_gating=bool(cfg.get("noisy_gating", False)),
                    prompt_init_scale=float(cfg.get("prompt_init_scale", 1.0)),
                    dtype=model_dtype(config.model.dtype))


ROUTER_INPUTS = {"stage": "input", "image": "image", "stem": "stem"}


def router_source(router_input: str) -> str:
  """``moe.router_input`` -> ``MoEResNet.router_source``."""
  if router_input not in ROUTER_INPUTS:
    raise ValueError(f"moe.router_input must be one of {tuple(ROUTER_INPUTS)}, "
                     f"got {router_input!r}")
  return ROUTER_INPUTS[router_input]


def shared_param(path: str) -> bool:
  """False for the stacked expert copies ('.../stage3_moe/experts/...'), True otherwise."""
  parts = path.split("/")
  return not any(a.endswith("_moe") and b == "experts" for a, b in zip(parts, parts[1:]))


def router_param(path: str) -> bool:
  """True for the routers' parameters ('.../stage3_moe/router/...')."""
  parts = path.split("/")
  return any(a.endswith("_moe") and b == "router" for a, b in zip(parts, parts[1:]))


def scale_updates(scale: float, select=router_param) -> optax.GradientTransformation:
  """Multiplies the updates of the parameters whose path satisfies ``select`` by
  ``scale`` (chained after the optimiser: their learning rate times ``scale``)."""

  def update_fn(updates, state, params=None):
    del params
    return jax.tree_util.tree_map_with_path(
        lambda path, u: u * scale if select(path_str(path)) else u, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def recipe_parts(ctx, fused_variables: dict, expert_variables: list[dict]) -> dict:
  """``(model, Recipe fields)`` of the student's stage for run context ``ctx``."""
  cfg, n = ctx.config.moe, len(ctx.degradations)
  model = moe_student(ctx.config, ctx.data_spec, cfg.train_k, ctx.task)
  init = ctx.task.moe_variables(model, fused_variables, expert_variables,
                                jax.random.fold_in(jax.random.PRNGKey(ctx.seed),
                                                   1000 + cfg.train_k),
                                ctx.dataset.image_shape)
  degrade = ctx.plan.combined()
  loss_fn = distill.fusiondistill_loss(
      model, ctx.task, degrade=degrade, num_experts=n, feature=ctx.config.distill_feature,
      alpha=cfg.alpha, gammas=cfg.gamma, teacher_model=ctx.model,
      aux_loss_weight=cfg.balance_weight, router_weight=float(cfg.router_supervision),
      rng_streams=("gating",) if cfg.noisy_gating else (),
      balance=task_balance(ctx.config, "moe"), output_weight=cfg.output_weight)
  # Real training pairs (restoration) join its data as they join every combined stage's.
  parts = dict(loss_fn=loss_fn, init=init, frozen=stack_trees(expert_variables), shares=n,
               selection_degrade=degrade, selection_shares=tuple(ctx.degradations),
               model=model, pairs=ctx.degradations)
  homogenized, wraps = homogenized_recipe(cfg.homogenize, n, shared=shared_param), []
  if homogenized:
    parts["grad_fn"] = homogenized["grad_fn"]
    wraps.append(homogenized["wrap_tx"])
  if float(cfg.router_lr_scale) != 1.0:
    wraps.append(lambda tx: optax.chain(tx, scale_updates(float(cfg.router_lr_scale))))
  if wraps:
    def wrap_tx(tx):
      for wrap in wraps:
        tx = wrap(tx)
      return tx
    parts["wrap_tx"] = wrap_tx
  return parts
