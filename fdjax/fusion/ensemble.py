"""Output-space fusion: the experts' plurality vote (FusionDistill's Ensemble row).

Each expert votes for its argmax class; the class with most votes wins. Ties:

* ``mode='paper_text'`` (default, the paper's text): among the TIED classes only,
  pick the one with the largest sum over experts of softmax probabilities.
* ``mode='paper_code'`` (for reproduction): the paper's code, on a tie, takes
  the argmax over ALL classes of the experts' summed LOGITS, which can return
  a class outside the tie (even one no expert voted for).

Remaining exact ties go to the lowest class index (``jnp.argmax``). Everything
is vectorised over the batch, so ``jax.jit(ensemble_predict,
static_argnames='mode')`` works.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

MODES = ("paper_text", "paper_code")


def ensemble_predict(logits_stack, mode: str = "paper_text"):
  """Plurality vote of ``N`` experts.

  Args:
    logits_stack: float ``[N_experts, B, C]`` logits.
    mode: ``'paper_text'`` or ``'paper_code'`` (tie-breaking rule, see module doc).

  Returns:
    int32 ``[B]`` class labels.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
  logits_stack = jnp.asarray(logits_stack)
  if logits_stack.ndim != 3:
    raise ValueError(f"logits_stack must be [N_experts, B, C], got shape {logits_stack.shape}")
  return _predict(logits_stack, mode)


@functools.partial(jax.jit, static_argnames="mode")
def _predict(logits_stack, mode):
  logits_stack = logits_stack.astype(jnp.float32)
  num_classes = logits_stack.shape[-1]
  votes = jnp.argmax(logits_stack, axis=-1)                                    # [N, B]
  counts = jax.nn.one_hot(votes, num_classes, dtype=jnp.int32).sum(axis=0)     # [B, C]
  tied = counts == counts.max(axis=-1, keepdims=True)                          # [B, C]
  if mode == "paper_text":
    # Restricting to the tied classes also covers the no-tie case (one class tied).
    prob_sum = jax.nn.softmax(logits_stack, axis=-1).sum(axis=0)               # [B, C]
    return jnp.argmax(jnp.where(tied, prob_sum, -jnp.inf), axis=-1).astype(jnp.int32)
  is_tie = tied.sum(axis=-1) > 1                                               # [B]
  by_logits = jnp.argmax(logits_stack.sum(axis=0), axis=-1)                    # all classes
  return jnp.where(is_tie, by_logits, jnp.argmax(counts, axis=-1)).astype(jnp.int32)
