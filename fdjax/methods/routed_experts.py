"""Routed experts: the trained MoE router picks one of the N per-degradation experts per
test image and that expert predicts. It is the system FusionDistill argues against
(host N models and estimate the degradation at run time), here with the
FusionDistill-MoE student's router as the degradation estimator: no extra training.
Every task that builds a MoE student (``Task.moe_student``: the ResNet student for
classification, the U-Net student for restoration) has this row.

Per image, the chosen expert is the top-1 of the student's ``features['router']`` (for
per-pixel routing, of the gates averaged over the pixels of the unpadded image:
``fdjax.moe.usage.image_choice``), and only that expert restores it (``lax.map`` over
the batch, the chosen expert's weights picked by index: one expert per image, not all
N). Columns, for the
deployed system (routing decision, then ONE expert), with the routing decision's cost
read off the student's computation (``fdjax.moe.routing_cost``: the parameters
``features['router']`` depends on, XLA's FLOPs of computing it alone):

* params: the N experts plus the routing decision's parameters;
* active params: one expert plus those;
* FLOPs/img (rel.): (routing decision + one expert) / one dense model, at the MoE
  rows' cost shape (``fusiondistill_moe.cost_shape``);
* routing acc. (non-clean): per degradation, the share of its degraded test images
  (non-clean levels) whose chosen expert is its own, then the mean over the
  degradations (each task weighs the same, whatever its test set's size), one decision
  per image as the row decides (``fdjax.moe.usage``, ``per_image``).
"""

from __future__ import annotations

import functools

import jax

from fdjax import moe
from fdjax.methods import fusiondistill_moe
from fdjax.methods.base import Method, Output
from fdjax.moe import routing_cost
from fdjax.moe.student import STAGE
from fdjax.moe.usage import image_choice
from fdjax.study import stages
from fdjax.trees import stack_trees

ROW = "Routed experts"


@functools.lru_cache(maxsize=8)
def routed_predictor(task, router_model, expert_model):
  """``predict({'router': student variables, 'experts': stacked expert variables},
  images_uint8) -> outputs``: each image through the expert its router picks."""

  def predict(variables, images):
    choice = route(task, router_model, variables["router"], images)          # [B]

    def restore_one(args):  # ONE expert per image: the chosen expert's weights, batch of 1
      index, image = args
      chosen = jax.tree.map(lambda leaf: leaf[index], variables["experts"])
      return task.predict(expert_model, chosen, image[None])[0]

    return jax.lax.map(restore_one, (choice, images))

  return predict


def route(task, router_model, variables, images) -> jax.Array:
  """int ``[B]``: the top-1 expert of each image (per-pixel gates averaged over the
  image's own pixels first)."""
  gates = task.forward(router_model, variables, images)[1]["router"]
  return image_choice(gates, images, int(getattr(router_model, "stride", 1)))


def router_params(model, variables, input_shape) -> int:
  """Parameters of the MoE student that its routing decision (``features['router']``)
  reads on inputs of ``input_shape`` (``routing_cost.decision_params``)."""
  return routing_cost.decision_params(model, variables, input_shape)


def cost_columns(ctx, router_model, variables, experts) -> dict:
  """params, active params and FLOPs/img (rel.) of the deployed row (module docstring)."""
  shape = fusiondistill_moe.cost_shape(ctx, router_model)
  routing_part = router_params(router_model, variables, shape)
  dense = fusiondistill_moe.cost(ctx, ctx.model, experts[0])
  flops = routing_cost.decision_flops(router_model, variables, shape) + dense["flops"]
  one_expert = moe.param_count(experts[0])
  return {"params": routing_part + len(experts) * one_expert,
          "active params": routing_part + one_expert,
          "FLOPs/img (rel.)": round(flops / dense["flops"], 2)}


def _rows(runner) -> Output:
  ctx = runner.ctx
  trained, variables = runner.get(STAGE)
  experts = stages.experts(runner)
  variables_both = {"router": variables, "experts": stack_trees(experts)}
  results = runner.evaluate("routed_experts", variables_both,
                            predict=routed_predictor(ctx.task, trained, ctx.model))
  stats = fusiondistill_moe.routing(runner, trained, variables, per_image=True)
  columns = {**cost_columns(ctx, trained, variables, experts),
             **fusiondistill_moe.routing_column(stats)}
  return Output([(ROW, results)], extra={ROW: columns})


METHOD = Method("routed_experts", requires=lambda ctx: (*stages.expert_names(ctx), STAGE),
                rows=_rows, stages=fusiondistill_moe.METHOD.stages)
