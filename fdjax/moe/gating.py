"""Top-K gating, the MEASNet / Shazeer balance loss and Switch-style capacity dispatch.

Shapes: ``E`` experts; gates live on the last axis, ``[..., E]`` (``[B, E]`` per
image, ``[B, H, W, E]`` per pixel).

Conventions (documented choices):

* ``top_k_gates`` keeps the K largest softmax weights of each row and, by default,
  **renormalises them to sum to 1** (``g_j = p_j / sum_{kept} p``). MEASNet eq. (3)
  weights the kept experts by their raw softmax weights ``w^{j_k}``; we renormalise
  because every expert is initialised from a trained dense stage, so a convex
  combination of their outputs stays at the scale the downstream (shared) layers
  were trained on. Consequence: with ``K = 1`` the kept weight is exactly 1 and the
  task loss sends no gradient to the router (only the balance loss's importance
  term does); ``renormalize=False`` gives MEASNet's literal form. Ties are broken
  toward the lower expert index (``jax.lax.top_k``).
* ``balance_loss`` follows MEASNet eqs. (4)-(6): importance ``S(n)`` sums the
  softmax weights **before** top-K (``W_i = Softmax(F_c p_e)``, eq. 2) over the batch
  (and pixels); load ``S~(n)`` counts how often expert n is among the K selected
  (not differentiable, no gradient). MEASNet prints eq. (6) as ``sigma / (mu^2 + eps)``
  but cites the coefficient-of-variation-squared loss of Shazeer et al. 2017 [57],
  ``var / (mu^2 + eps)``, which is what we use (population variance, ``eps = 1e-10``
  as in Shazeer's code). MEASNet's paper writes it per image over pixels; we pool the
  whole batch (and pixels), one scalar per MoE stage, as MEASNet's official code does.
  That code (``net/STPG_G_MESE.py``) departs from the paper elsewhere, where fdjax follows
  the paper: its gates are renormalised (fdjax's default), its importance sums the gates
  after top-K (eq. 4: before), its variance is PyTorch's unbiased one (E / (E - 1) times
  ours), and it mixes the experts in log space, ``log sum_k g_k exp(E_k(x))`` (eq. 3: a
  plain weighted sum).
* Noisy top-K gating (Shazeer et al. 2017, Sec. 2.1 and Appendix A; MEASNet's gate
  follows it), used by ``fdjax.moe.routing.route`` when ``noisy_gating`` and ``train``
  (every routed block: ``MoEStage``, MEASNet's, the U-Net student's): the logits
  ``h`` get ``N(0, 1) * softplus(x W_noise)`` added before the softmax and top-K
  (``noise_std`` from the router, ``fdjax.moe.router``); at evaluation nothing is
  added. The load term then becomes differentiable: expert n's load is
  ``sum_tokens P(h_n + noise_n > kth_excluding(noisy h, k, n))``, the normal CDF of
  ``(h_n - threshold) / noise_std_n`` (``noisy_top_k_load``), instead of the count.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.stats import norm

EPS = 1e-10


def cv_squared(x: jax.Array, eps: float = EPS) -> jax.Array:
  """Squared coefficient of variation of a vector ``x [E]``: ``var(x) / (mean(x)^2 + eps)``.

  Population variance (divide by E). 0 for a constant vector; a single expert (E=1) gives 0.
  """
  x = jnp.asarray(x, jnp.float32)
  return jnp.var(x) / (jnp.mean(x) ** 2 + eps)


def top_k_gates(probs: jax.Array, k: int, renormalize: bool = True) -> tuple[jax.Array, jax.Array]:
  """Keeps the ``k`` largest weights of each row of ``probs [..., E]``.

  Returns ``(gates [..., E], mask [..., E])``: ``mask`` is 1.0 on the kept experts (a
  constant, no gradient), ``gates = probs * mask`` divided by its row sum when
  ``renormalize`` (rows then sum to 1). Gradient reaches ``probs`` through the kept
  entries only.
  """
  num_experts = probs.shape[-1]
  if not 1 <= k <= num_experts:
    raise ValueError(f"top-K needs 1 <= k <= num_experts ({num_experts}), got k={k}")
  _, index = jax.lax.top_k(jax.lax.stop_gradient(probs), k)             # [..., K]
  mask = jnp.sum(jax.nn.one_hot(index, num_experts, dtype=probs.dtype), axis=-2)  # [..., E]
  gates = probs * mask
  if renormalize:
    gates = gates / jnp.sum(gates, axis=-1, keepdims=True)
  return gates, mask


def importance_and_load(probs: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """MEASNet eqs. (4), (5): per-expert sums over all leading axes. ``[..., E] -> [E], [E]``."""
  e = probs.shape[-1]
  return probs.reshape(-1, e).sum(0), jax.lax.stop_gradient(mask.reshape(-1, e).sum(0))


def balance_loss(probs: jax.Array, mask: jax.Array, eps: float = EPS,
                 load_probs: jax.Array | None = None) -> jax.Array:
  """``cv^2(importance) + cv^2(load)`` (MEASNet eq. 6, unweighted; lambda lives in the objective).

  probs: softmax weights before top-K ``[..., E]``; mask: selection mask from ``top_k_gates``.
  load_probs: ``[..., E]`` per-token probabilities of being selected (noisy gating,
  ``noisy_top_k_load``); when given, the load is their sum (differentiable) instead of
  the count of ``mask``.
  """
  importance, load = importance_and_load(probs.astype(jnp.float32), mask.astype(jnp.float32))
  if load_probs is not None:
    load = load_probs.astype(jnp.float32).reshape(-1, probs.shape[-1]).sum(0)
  return cv_squared(importance, eps) + cv_squared(load, eps)


def noisy_logits(logits: jax.Array, noise_std: jax.Array, key: jax.Array) -> jax.Array:
  """``logits + N(0, 1) * noise_std`` (Shazeer et al. 2017, eq. 4), noise drawn with ``key``."""
  return logits + jax.random.normal(key, logits.shape, logits.dtype) * noise_std


def noisy_top_k_load(clean: jax.Array, noisy: jax.Array, noise_std: jax.Array,
                     k: int) -> jax.Array:
  """Per token, the probability that each expert is among the top ``k`` (Shazeer et al.
  2017, Appendix A, eqs. 8-9), differentiable in ``clean`` and ``noise_std``.

  clean, noisy, noise_std: ``[..., E]`` (logits without / with this draw's noise, and
  the noise's standard deviation). For expert n, with the noise of the OTHER experts
  fixed at this draw, ``P(n in top k) = Phi((clean_n - kth_excluding(noisy, k, n)) /
  noise_std_n)`` where ``kth_excluding(v, k, n)`` is the k-th largest entry of ``v``
  without entry n: the (k+1)-th largest of ``noisy`` when n is itself in the top k,
  the k-th largest otherwise (as Shazeer's ``_prob_in_top_k``). Needs ``k < E`` (with
  ``k = E`` every expert is always selected: use the count). Returns ``[..., E]``.
  """
  num_experts = clean.shape[-1]
  if not 1 <= k < num_experts:
    raise ValueError(f"noisy load needs 1 <= k < num_experts ({num_experts}), got k={k}")
  top, _ = jax.lax.top_k(noisy, k + 1)                                  # [..., k+1]
  threshold_if_in = top[..., k:k + 1]
  threshold_if_out = top[..., k - 1:k]
  is_in = noisy > threshold_if_in
  prob_if_in = norm.cdf((clean - threshold_if_in) / noise_std)
  prob_if_out = norm.cdf((clean - threshold_if_out) / noise_std)
  return jnp.where(is_in, prob_if_in, prob_if_out)


def expert_capacity(num_tokens: int, num_experts: int, k: int,
                    capacity_factor: float | None = None) -> int:
  """Switch-Transformer capacity ``ceil(tokens * K / E * capacity_factor)``, at most ``tokens``.

  ``capacity_factor=None`` means ``E / K``: capacity = ``tokens``, nothing is ever dropped.
  """
  if capacity_factor is None:
    return num_tokens
  cap = math.ceil(num_tokens * k * capacity_factor / num_experts - 1e-9)
  return max(1, min(num_tokens, cap))


def dispatch_tensors(gates: jax.Array, mask: jax.Array, capacity: int
                     ) -> tuple[jax.Array, jax.Array]:
  """One-hot dispatch and combine tensors for per-token routing (tokens = images).

  gates, mask: ``[T, E]`` from ``top_k_gates``. Token t takes slot
  ``position = (number of earlier tokens routed to e)`` in expert e's buffer (batch
  order is the priority); tokens whose position is ``>= capacity`` are dropped for
  that expert (their contribution is zero). Returns ``dispatch [T, E, capacity]``
  (0/1, no gradient) and ``combine = dispatch * gates[..., None]`` (differentiable
  in the gates).
  """
  mask = jax.lax.stop_gradient(mask)
  position = (jnp.cumsum(mask, axis=0) - 1.0) * mask                    # [T, E]
  kept = mask * (position < capacity)
  dispatch = jax.nn.one_hot(position.astype(jnp.int32), capacity, dtype=gates.dtype)
  dispatch = dispatch * kept[..., None]                                  # [T, E, C]
  return dispatch, dispatch * gates[..., None]


def pool_gates(gates: jax.Array, out_hw: tuple[int, int], renormalize: bool = True) -> jax.Array:
  """Per-pixel gates ``[B, H, W, E]`` -> ``[B, h, w, E]`` by average pooling (H/h x W/w windows).

  Used when a routed stage downsamples: expert outputs are combined at the stage's
  output resolution with the mean of the gates of the input pixels each output
  pixel covers. With ``renormalize`` (the top-K gates sum to 1) the pooled rows are
  divided by their sum: an average of rows that sum to 1 already sums to 1, so this
  only removes rounding and keeps the combination convex. Up to ``K * (H/h) * (W/w)``
  experts can be active at one output pixel.
  """
  b, h_in, w_in, e = gates.shape
  h, w = out_hw
  if (h_in, w_in) == (h, w):
    return gates
  if h_in % h or w_in % w:
    raise ValueError(f"cannot pool gates {h_in}x{w_in} to {h}x{w}")
  pooled = gates.reshape(b, h, h_in // h, w, w_in // w, e).mean(axis=(2, 4))
  return pooled / jnp.sum(pooled, axis=-1, keepdims=True) if renormalize else pooled
