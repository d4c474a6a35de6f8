"""Router usage: which expert each test degradation is sent to.

For every degradation and every evaluated level, the test images are degraded with the
fixed evaluation keys of the study's ``LevelPlan`` and routed; the usage of expert e
is the fraction of routing decisions (images, or pixels for per-pixel routing) whose
largest gate weight is e. The result is a ``[num_degradations, num_experts]`` matrix
whose rows sum to 1; a router that learned the degradations without labels puts most
of each row on the diagonal.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdjax import degradations
from fdjax.eval.metric import eval_batches


@functools.lru_cache(maxsize=16)
def _top1_counts_fn(task, model, name: str, num_experts: int):
  @jax.jit
  def counts(variables, images, level_vector, mask, key):
    degraded = degradations.apply(name, key, images, level_vector)
    _, features = task.forward(model, variables, degraded)
    top1 = jnp.argmax(features["router"], axis=-1)          # [B] or [B, H, W]
    weight = mask.reshape(mask.shape + (1,) * (top1.ndim - 1)).astype(jnp.float32)
    one_hot = jax.nn.one_hot(top1, num_experts) * weight[..., None]
    return one_hot.reshape(-1, num_experts).sum(0)
  return counts


def router_usage(task, model, variables, split, plan, *, batch_size: int,
                 include_clean: bool = False) -> np.ndarray:
  """float ``[len(plan.names), num_experts]``: fraction of routing decisions per expert.

  Levels and keys: ``plan.eval_levels`` / ``plan.eval_key`` (those of evaluation); the
  clean level is skipped unless ``include_clean`` (clean images carry no degradation
  to route by).
  """
  num_experts = model.num_experts
  usage = np.zeros((len(plan.names), num_experts))
  for row, name in enumerate(plan.names):
    counts_fn = _top1_counts_fn(task, model, name, num_experts)
    chosen = [(level, index) for level, index in plan.eval_levels(name)
              if include_clean or level != degradations.clean_level(name)]
    total = jnp.zeros((num_experts,))
    for batch_index, batch in enumerate(eval_batches(split, batch_size, None)):
      for level, index in chosen:
        level_vector = np.full((batch["image"].shape[0],), level, np.float32)
        total = total + counts_fn(variables, batch["image"], level_vector, batch["mask"],
                                  plan.eval_key(name, index, batch_index))
    usage[row] = np.asarray(total) / max(float(np.sum(total)), 1.0)
  return usage


def format_usage(usage: np.ndarray, names: Sequence[str], expert_names: Sequence[str]) -> str:
  """Markdown table: rows = test degradation, columns = expert (percent)."""
  lines = ["| test degradation | " + " | ".join(f"expert {e}" for e in expert_names) + " |",
           "|:--|" + "--:|" * len(expert_names)]
  for name, row in zip(names, usage):
    lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |")
  return "\n".join(lines)
