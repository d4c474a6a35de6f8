"""MEASNet's task-specific prompt generation router (Yu et al., Sec. III-B).

From shallow features ``x [B, H, W, Cin]`` (by default the input of the routed
stage):

1. TSPG (Sec. III-B1): ``q = softmax(GAP(conv3x3(x)))``, ``q [B, C]`` with C =
   ``num_prompts``; the task prompt is ``p = q @ P_t`` (eq. 1) over C learnable
   *basic prompts* ``P_t [C, D]``. MEASNet sets D = C (the conv width) because it
   concatenates the prompt with the conv output; we concatenate it with the router
   input itself, so ``D = prompt_dim`` defaults to ``Cin``.
2. TCI / expert selection (Sec. III-B2): ``F_c = [p, content]`` and gate logits
   ``F_c @ p_e`` (eq. 2) with learnable *expert prompts* ``p_e [D + Cin, E]``. The
   softmax of eq. (2) and the top-K selection are applied by the caller
   (``fdjax.moe.gating``).

Per image (``per_pixel=False``): content = ``GAP(x) [B, Cin]``, logits ``[B, E]``.
Per pixel (``per_pixel=True``, MEASNet's own form): content = ``x`` itself, the
prompt is broadcast over pixels (MEASNet's ``P~_i in R^{H x W x C}``), logits
``[B, H, W, E]`` at the resolution of ``x``.

Noisy gating (``noisy=True``, Shazeer et al. 2017): the router also returns the
standard deviation of the gate noise, ``softplus(F_c @ W_noise) + 0.01`` per expert
(``W_noise [D + Cin, E]`` starts at zero, as in Shazeer's code, so the noise starts
at std ``softplus(0) + 0.01 = 0.70`` for every input and then becomes
input-dependent). Adding the noise (training only) is the caller's
(``fdjax.moe.routing.route``, which every routed block calls).

The router always computes in float32 (routing decisions are sensitive to rounding,
as in Switch Transformers), whatever the network's dtype.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

NOISE_EPSILON = 1e-2   # Shazeer et al.'s noise_epsilon: the noise std never reaches 0


class PromptRouter(nn.Module):
  """Gate logits from shallow features.

  Attributes:
    num_experts: E.
    num_prompts: C, the number of basic prompts (= TSPG conv width).
    prompt_dim: D, length of each basic prompt; default: channels of ``x``.
    per_pixel: per-pixel logits ``[B, H, W, E]`` instead of per-image ``[B, E]``.
    prompt_init_std / expert_prompt_init_std: normal init scales of ``P_t`` and
      ``p_e``. The small ``p_e`` makes the initial gates nearly uniform, so the
      experts (initialised from trained models) start as an even mixture.

    noisy: also return the gate-noise standard deviation (see the module docstring).

  Parameters: ``prompt_conv`` (3x3 conv, C outputs, with bias), ``basic_prompts``
  ``[C, D]``, ``expert_prompts`` ``[D + Cin, E]``; ``noise_weights`` ``[D + Cin, E]``
  when ``noisy``.
  """

  num_experts: int
  num_prompts: int = 8
  prompt_dim: int | None = None
  per_pixel: bool = False
  prompt_init_std: float = 1.0
  expert_prompt_init_std: float = 0.02
  noisy: bool = False

  @nn.compact
  def __call__(self, x):
    """x: ``[B, H, W, Cin]``. Returns float32 logits ``[B, E]`` or ``[B, H, W, E]``;
    with ``noisy``, ``(logits, noise_std)`` of the same shape."""
    x = x.astype(jnp.float32)
    c_in = x.shape[-1]
    dim = self.prompt_dim or c_in
    # TSPG: conv -> GAP -> softmax gives the weights q over the basic prompts.
    h = nn.Conv(self.num_prompts, (3, 3), padding=((1, 1), (1, 1)), name="prompt_conv")(x)
    q = nn.softmax(jnp.mean(h, axis=(1, 2)), axis=-1)                        # [B, C]
    basic = self.param("basic_prompts", nn.initializers.normal(self.prompt_init_std),
                       (self.num_prompts, dim))
    prompt = q @ basic                                                       # eq. (1): [B, D]
    if self.per_pixel:
      content = x                                                            # [B, H, W, Cin]
      prompt = jnp.broadcast_to(prompt[:, None, None, :], (*x.shape[:3], dim))
    else:
      content = jnp.mean(x, axis=(1, 2))                                     # [B, Cin]
    fused = jnp.concatenate([prompt, content], axis=-1)                      # F_c: [..., D + Cin]
    expert_prompts = self.param("expert_prompts",
                                nn.initializers.normal(self.expert_prompt_init_std),
                                (dim + c_in, self.num_experts))
    logits = fused @ expert_prompts                                          # eq. (2) logits
    if not self.noisy:
      return logits
    noise_weights = self.param("noise_weights", nn.initializers.zeros,
                               (dim + c_in, self.num_experts))
    return logits, nn.softplus(fused @ noise_weights) + NOISE_EPSILON
