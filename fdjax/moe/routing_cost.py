"""What a MoE student's routing decision costs on its own: the parameters it reads and
the FLOPs XLA spends on it.

The routed-experts row (``fdjax.methods.routed_experts``) deploys the student's router
as a degradation estimator in front of N dense experts: per image it computes the
student's ``features['router']`` (the gates that decide) and then runs ONE expert. Which
part of the student that decision needs depends on the student and its router input:
the ResNet student's first routed stage with ``router_source='image'`` needs the router
alone, with ``'input'`` also the stem and the stages before it; the U-Net student's
finest routed block with ``router_input='stage'`` needs the encoder, the middle and the
coarser decoder levels (all E copies of any routed block among them), with ``'image'``
the router alone. Rather than a rule per architecture, both numbers are read off the
computation itself:

* ``decision_params``: the parameter scalars that ``features['router']`` depends on,
  found by walking the traced program (``jax.make_jaxpr``) backwards from that output
  (exact through nested ``jit`` calls; any other primitive with a sub-program counts
  all its inputs, which over-counts only when it mixes the router's inputs with
  others');
* ``decision_flops``: XLA's FLOP count of the program returning only
  ``features['router']`` (``fdjax.moe.cost.inference_flops``; XLA drops the rest).
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.extend.core import Literal

from fdjax.moe.cost import inference_flops

CALLS = ("jit", "pjit", "closed_call", "core_call")  # sub-program inputs map 1:1


def decision(model):
  """``(variables, x) -> features['router']`` of ``model`` at inference."""
  return lambda variables, x: model.apply(variables, x, train=False)[1]["router"]


def _used(jaxpr, used_out: list[bool]) -> list[bool]:
  """Per input variable of ``jaxpr`` (a ``Jaxpr``): whether an output marked in
  ``used_out`` depends on it."""
  live = {v for v, u in zip(jaxpr.outvars, used_out) if u and not isinstance(v, Literal)}
  for eqn in reversed(jaxpr.eqns):
    out = [v in live for v in eqn.outvars]
    if not any(out):
      continue
    inner = eqn.params.get("jaxpr") if eqn.primitive.name in CALLS else None
    if inner is not None:
      inputs = _used(getattr(inner, "jaxpr", inner), out)
    else:
      inputs = [True] * len(eqn.invars)
    live.update(v for v, u in zip(eqn.invars, inputs) if u and not isinstance(v, Literal))
  return [v in live for v in jaxpr.invars]


def used_leaves(fn, *args) -> list[bool]:
  """Per leaf of ``args`` (``jax.tree.leaves`` order): whether ``fn(*args)``'s outputs
  depend on it."""
  closed = jax.make_jaxpr(fn)(*args)
  return _used(closed.jaxpr, [True] * len(closed.jaxpr.outvars))


def decision_params(model, variables, input_shape) -> int:
  """Parameter scalars (``variables['params']``) that ``model``'s routing decision reads
  on inputs of ``input_shape`` (with batch). Only shapes are read: the leaves may be
  ``jax.ShapeDtypeStruct``s (``jax.eval_shape`` of ``model.init``)."""
  params = variables["params"]
  others = {k: v for k, v in variables.items() if k != "params"}
  x = jax.ShapeDtypeStruct(tuple(input_shape), np.float32)
  used = used_leaves(lambda p, o, image: decision(model)({"params": p, **o}, image),
                     params, others, x)
  sizes = [math.prod(leaf.shape) for leaf in jax.tree.leaves(params)]
  return int(sum(s for s, u in zip(sizes, used) if u))


def decision_flops(model, variables, input_shape) -> float:
  """XLA:CPU's FLOPs (``inference_flops``) of ``model``'s routing decision alone on one
  input of ``input_shape``."""
  return inference_flops(decision(model), variables, tuple(input_shape))
