"""Routed experts: the trained MoE router picks one of the N per-degradation experts per
test image and that expert predicts. It is the system FusionDistill argues against
(host N models and estimate the degradation at run time), here with the
FusionDistill-MoE student's router as the degradation estimator: no extra training.

Per image, the chosen expert is the top-1 of the student's ``features['router']`` (for
per-pixel routing, of the gates averaged over pixels); every expert runs on the batch
and each image keeps its chosen expert's output (a measurement of accuracy, not of
speed). Columns: parameters held (the N experts plus what the routing decision
needs: the router and the student's layers before it, ``router_params``), parameters
used per image (one expert plus those), and the routing accuracy on non-clean levels
(the student's router, ``fdjax.moe.usage``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fdjax import moe
from fdjax.methods import fusiondistill_moe
from fdjax.methods.ensemble import member_outputs
from fdjax.methods.base import Method, Output
from fdjax.moe.model import STAGES
from fdjax.moe.student import STAGE
from fdjax.study import stages
from fdjax.trees import stack_trees

ROW = "Routed experts"


@functools.lru_cache(maxsize=8)
def routed_predictor(task, router_model, expert_model):
  """``predict({'router': student variables, 'experts': stacked expert variables},
  images_uint8) -> outputs``: each image through the expert its router picks."""

  def predict(variables, images):
    choice = route(task, router_model, variables["router"], images)          # [B]
    outputs = member_outputs(task, expert_model, variables["experts"], images)  # [N, B, ...]
    return outputs[choice, jnp.arange(images.shape[0])]

  return predict


def route(task, router_model, variables, images) -> jax.Array:
  """int ``[B]``: the top-1 expert of each image (gates averaged over pixels first)."""
  gates = task.forward(router_model, variables, images)[1]["router"]
  if gates.ndim > 2:
    gates = jnp.mean(gates, axis=tuple(range(1, gates.ndim - 1)))
  return jnp.argmax(gates, axis=-1)


def router_params(model, params: dict) -> int:
  """Parameters of the MoE student that its first routed stage's routing decision needs:
  the router, plus the stem (router input 'stem' or 'input') and the unrouted stages
  before the routed one (router input 'input')."""
  params = params.get("params", params)
  first = min(model.moe_stages, key=STAGES.index)
  total = moe.param_count(params[f"{first}_moe"]["router"])
  if model.router_source == "image":
    return total
  before = STAGES[:STAGES.index(first)] if model.router_source == "input" else ()
  for name, tree in params.items():
    if name.startswith("stem_") or any(name.startswith(f"{s}_block") for s in before):
      total += moe.param_count(tree)
  return total


def _rows(runner) -> Output:
  ctx = runner.ctx
  trained, variables = runner.get(STAGE)
  experts = stages.experts(runner)
  variables_both = {"router": variables, "experts": stack_trees(experts)}
  results = runner.evaluate("routed_experts", variables_both,
                            predict=routed_predictor(ctx.task, trained, ctx.model))
  stats = fusiondistill_moe.routing(runner, trained, variables)
  routing_part = router_params(trained, variables)
  one_expert = moe.param_count(experts[0])
  columns = {"params": routing_part + len(experts) * one_expert,
             "active params": routing_part + one_expert,
             **fusiondistill_moe.routing_column(stats)}
  return Output([(ROW, results)], extra={ROW: columns})


METHOD = Method("routed_experts", requires=lambda ctx: (*stages.expert_names(ctx), STAGE),
                rows=_rows, stages=fusiondistill_moe.METHOD.stages)
