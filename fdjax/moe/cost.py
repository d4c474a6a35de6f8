"""Inference cost of MoE and dense students: XLA FLOPs, parameters, active parameters, speed.

* ``inference_flops``: FLOPs of one forward pass as XLA counts them for the compiled
  program (``jit(...).lower(...).compile().cost_analysis()['flops']``). A ``dense``
  MoE counts all E experts; a ``sparse`` one with ``capacity_factor=None`` counts K
  expert evaluations per image (any batch size, B = 1 included); a capacity-buffer
  one counts ``E * capacity`` slots (``K/E * capacity_factor`` of the dense expert work
  for large batches, all E experts at B = 1) plus the one-hot dispatch/combine einsums.
* ``param_count``: stored parameters; ``active_param_count``: parameters one
  routing decision (an image, or a pixel for per-pixel routing) selects: K of the E
  stacked expert copies. Nominal for per-pixel routing at a stage that down-samples:
  there an output pixel pools the gates of the s x s input pixels it covers, so it
  may mix up to ``min(E, K s^2)`` experts.
* ``images_per_second``: wall-clock throughput (warm-up, ``block_until_ready``, median).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from fdjax.moe.init import is_expert_leaf


def _params(tree) -> Any:
  return tree["params"] if isinstance(tree, dict) and "params" in tree else tree


def param_count(tree) -> int:
  """Number of scalars in ``tree``'s ``params`` (or in ``tree`` itself if it has no ``params``)."""
  return int(sum(np.size(leaf) for leaf in jax.tree.leaves(_params(tree))))


def expert_param_count(tree) -> int:
  """Scalars in the stacked expert copies (all E of them)."""
  leaves = jax.tree_util.tree_leaves_with_path(_params(tree))
  return int(sum(np.size(leaf) for path, leaf in leaves if is_expert_leaf(path)))


def active_param_count(tree, num_experts: int, k: int) -> int:
  """Parameters used per routed token: all shared ones + ``k / num_experts`` of the experts'."""
  experts = expert_param_count(tree)
  return int(param_count(tree) - experts + experts // num_experts * k)


def inference_flops(apply_fn: Callable, variables, input_shape: tuple[int, ...],
                    dtype=jnp.float32) -> float:
  """XLA:CPU's FLOP count of ``apply_fn(variables, x)`` for ``x`` of ``input_shape`` (with
  batch), on any default backend (only shapes and dtypes of ``variables`` are used).

  ``apply_fn`` is e.g. ``model.apply`` (train=False by default) or ``lambda v, x:
  model.apply(v, x, train=False)[0]``.
  """
  # Compiled for XLA:CPU whatever the default backend: XLA:GPU's count of the same model
  # differs (its convolutions are cuDNN calls; a 3-task smoke run on an H200 reported
  # 5.1x a dense U-Net's FLOPs for a per-pixel MoE student that XLA:CPU counts at 1.7x),
  # and the table's ratios must not depend on where a run was made.
  cpu = jax.sharding.make_single_device_sharding(_cpu_device())
  abstract = lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a), sharding=cpu)
  x = jax.ShapeDtypeStruct(tuple(input_shape), dtype, sharding=cpu)
  compiled = jax.jit(apply_fn).lower(jax.tree.map(abstract, variables), x).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):   # older JAX: one dict per program
    analysis = analysis[0]
  if not analysis or "flops" not in analysis:
    raise RuntimeError("this backend reports no FLOP count (cost_analysis() lacks 'flops')")
  return float(analysis["flops"])


def _cpu_device():
  """The first CPU device; the default backend's first device (with a warning) where
  ``JAX_PLATFORMS`` leaves the CPU backend out (``cuda``, ``tpu``): a count there, not
  an error after the training is done."""
  try:
    return jax.devices("cpu")[0]
  except RuntimeError:
    device = jax.devices()[0]
    logging.warning("FLOPs counted by XLA:%s, not XLA:CPU (JAX_PLATFORMS=%s leaves the CPU "
                    "backend out): the relative FLOPs may differ from a CPU-counted run's",
                    device.platform.upper(), os.environ.get("JAX_PLATFORMS", ""))
    return device


def model_cost(apply_fn: Callable, variables, input_shape: tuple[int, ...],
               num_experts: int | None = None, k: int | None = None) -> dict:
  """``{'flops', 'params', 'active_params'}``; pass ``num_experts``/``k`` for a MoE model
  (otherwise active = all parameters)."""
  params = param_count(variables)
  active = params if num_experts is None else active_param_count(variables, num_experts, k)
  return {"flops": inference_flops(apply_fn, variables, input_shape), "params": params,
          "active_params": active}


def relative_cost(moe: dict, dense: dict) -> dict:
  """Ratios ``moe[key] / dense[key]`` over the keys both cost dicts have (``model_cost``'s).

  ``active_params`` of the dense model is its ``params`` when it has no such key.
  """
  dense = dict(dense)
  dense.setdefault("active_params", dense.get("params"))
  return {key: float(moe[key]) / float(dense[key]) for key in moe
          if key in dense and dense[key]}


def images_per_second(predict: Callable, variables, batch, *, warmup: int = 2,
                      repeats: int = 10) -> float:
  """Throughput of ``predict(variables, batch)`` (jit it yourself) in images/s.

  Runs ``warmup`` untimed calls (compilation), then ``repeats`` timed calls, each
  waited for with ``block_until_ready``; returns ``batch size / median time``.
  """
  if repeats < 1:
    raise ValueError("repeats must be >= 1")
  for _ in range(max(warmup, 1)):
    jax.block_until_ready(predict(variables, batch))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(predict(variables, batch))
    times.append(time.perf_counter() - start)
  return jax.tree.leaves(batch)[0].shape[0] / statistics.median(times)
