"""The stacked expert copies of a routed stage and the two ways to run them.

``ResidualStage`` is one copy (BasicBlocks of ``fdjax.models.resnet``); ``run_stacked``
runs E copies with variables stacked on axis 0 (vmapped or unrolled);
``run_selected_experts`` runs only each image's K chosen copies (sparse inference).
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from fdjax.models.resnet import residual_blocks


class ResidualStage(nn.Module):
  """``num_blocks`` BasicBlocks named ``block{b}``, the first with ``strides``. ``[B, H, W, C]``."""

  width: int
  num_blocks: int
  strides: int
  norm: Any
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    return residual_blocks(x, self.width, self.num_blocks, self.strides, self.norm, self.dtype)


ExpertLoop = Literal["auto", "vmap", "unroll"]


def resolve_expert_loop(expert_loop: ExpertLoop) -> str:
  """'auto' -> 'unroll' on XLA:CPU, 'vmap' on GPU/TPU (see ``run_stacked``)."""
  if expert_loop == "auto":
    return "unroll" if jax.default_backend() == "cpu" else "vmap"
  if expert_loop not in ("vmap", "unroll"):
    raise ValueError(f"expert_loop must be 'auto', 'vmap' or 'unroll', got {expert_loop!r}")
  return expert_loop


def run_stacked(stage_args: dict, num_experts: int, x, shared_input: bool,
                 expert_loop: ExpertLoop, name: str = "experts"):
  """E independent ``ResidualStage`` copies (params/batch_stats stacked on axis 0, module
  ``name``) on ``x``: the same ``[B, H, W, C]`` for all when ``shared_input``, else
  ``[E, B, H, W, C]`` (one slice each). Returns ``[E, B, h, w, width]``.

  'vmap' runs the copies side by side: what expert parallelism shards, and fast on
  GPU/TPU; XLA:CPU turns a vmap over conv weights into a grouped convolution, 5x slower
  than separate ones. 'unroll' runs them one after another as plain convolutions (a
  fully unrolled ``nn.scan``; a rolled scan is slower still on CPU): ResNet-20 with a
  4-expert stage 3, batch 128, train-mode gradient: 142 img/s unrolled vs 32 vmapped on
  2 CPU cores. Both build the same variables, so checkpoints do not depend on the choice.
  """
  return run_copies(ResidualStage(**stage_args, name=name), num_experts, x, shared_input,
                    expert_loop)


def run_copies(module: nn.Module, num_experts: int, x, shared_input: bool,
               expert_loop: ExpertLoop):
  """E copies of ``module`` (any ``[B, ...] -> [B, ...]`` module, created unbound in the
  caller's compact scope with the name its stacked variables take), params and
  batch_stats stacked on axis 0; inputs and loops as ``run_stacked``. Returns
  ``[E, B, ...]``."""
  lifted = dict(variable_axes={"params": 0, "batch_stats": 0}, split_rngs={"params": True})
  if resolve_expert_loop(expert_loop) == "vmap":
    fn = nn.vmap(lambda mdl, inputs: mdl(inputs), in_axes=None if shared_input else 0,
                 out_axes=0, axis_size=num_experts, **lifted)
    return fn(module, x)
  fn = nn.scan(lambda mdl, carry, inputs: (carry, mdl(inputs)),
               in_axes=nn.broadcast if shared_input else 0, out_axes=0,
               length=num_experts, unroll=num_experts, **lifted)
  return fn(module, None, x)[1]


def run_selected_experts(stage_args: dict, stacked: dict, x, probs, gates, k: int):
  """Per-example sparse dispatch: image b runs through its K selected experts only.

  stacked: the experts' ``{'params', 'batch_stats'}``, leaves ``[E, ...]``; x ``[B, H, W, C]``;
  probs / gates ``[B, E]`` before / after top-K. Gathers each image's K expert copies
  (leaves ``[B, K, ...]``: memory ``B * K`` copies of one stage) and runs them with a
  double ``vmap``: ``B * K`` stage evaluations, whatever the batch size (also at B = 1).
  Inference only (BatchNorm uses its running averages). Returns ``[B, h, w, width]``.
  """
  _, index = jax.lax.top_k(jax.lax.stop_gradient(probs), k)      # the same choice as top_k_gates
  weights = jnp.take_along_axis(gates, index, axis=-1)            # [B, K]
  selected = jax.tree.map(lambda leaf: leaf[index], stacked)      # [B, K, ...]
  stage = ResidualStage(**stage_args, parent=None)

  def run(variables, image):                                      # one expert, one image
    return stage.apply(variables, image[None])[0]

  y = jax.vmap(jax.vmap(run, in_axes=(0, None)))(selected, x)     # [B, K, h, w, width]
  return jnp.einsum("bk...,bk->b...", y, weights.astype(y.dtype))
