"""Router usage and routing accuracy: which expert each test degradation is sent to.

For every degradation and every evaluated level, the test images are degraded with the
fixed evaluation keys of the study's ``LevelPlan`` and routed; one pass
(``routing_stats``) counts, per level, the routing decisions (images, or pixels for
per-pixel routing; ``per_image``: one per image, from its mean gates, as the
routed-experts row decides) whose largest gate weight is each expert, and sums the entropy of
the router's softmax gates (before top-K). From those counts:

* ``usage``: ``[num_degradations, num_experts]``, the fraction of decisions per expert
  over the degraded levels (rows sum to 1); a router that learned the degradations
  puts most of each row on the diagonal;
* ``routing_accuracy``: per degradation, the share of decisions whose top expert is
  that degradation's own expert (expert i = degradation i of the plan, the order the
  MoE student's experts are built in), separately for NEAR-CLEAN levels (ambiguous by
  nature: a JPEG at Q 95 looks like a clean image, and so like every other
  degradation at its weakest) and for the others;
* ``gate_entropy``: mean entropy (nats) of the softmax gates over the decisions.

Near-clean levels, per degradation (``NEAR_CLEAN``; the clean level itself always is)::

    jpeg        Q >= 90 (101 = uncompressed)
    blur        sigma < 0.5 px
    awgn        sigma < 5 (0..255 units)
    sapn        p < 0.02 (sapn_paper too)
    any other   the clean level only
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdjax import degradations
from fdjax.eval.inference import padded_size
from fdjax.eval.metric import test_batches

# name -> (comparison, threshold): a level is near-clean when ``level <op> threshold``.
NEAR_CLEAN: dict[str, tuple[str, float]] = {
    "jpeg": (">=", 90.0), "blur": ("<", 0.5), "awgn": ("<", 5.0), "sapn": ("<", 0.02),
    "sapn_paper": ("<", 0.02)}


def is_near_clean(name: str, level: float) -> bool:
  """True for the clean level and the levels of ``NEAR_CLEAN[name]``."""
  if np.isclose(level, degradations.clean_level(name), rtol=0, atol=1e-9):
    return True
  if name not in NEAR_CLEAN:
    return False
  op, threshold = NEAR_CLEAN[name]
  return level >= threshold - 1e-9 if op == ">=" else level < threshold - 1e-9


def near_clean_rule(name: str) -> str:
  """``'Q >= 90'``-style description of ``name``'s near-clean levels."""
  if name not in NEAR_CLEAN:
    return f"level {degradations.clean_level(name):g} (clean) only"
  op, threshold = NEAR_CLEAN[name]
  return f"level {op} {threshold:g}"


def _valid(top1, images, stride: int):
  """``top1`` ``[B, h, w]`` (per-pixel decisions on images padded to ``stride``) cropped
  to the rows and columns that cover the unpadded ``images`` ``[B, H, W, 3]``; per-image
  decisions ``[B]`` as they are."""
  if top1.ndim < 3:
    return top1
  padded = [padded_size(n, stride) for n in images.shape[1:3]]
  keep = [-(-n // (p // r)) for n, p, r in zip(images.shape[1:3], padded, top1.shape[1:3])]
  return top1[:, :keep[0], :keep[1]]


def image_choice(gates, images, stride: int = 1) -> jax.Array:
  """int ``[B]``: one expert per image, the largest of ``gates`` ``[B, E]`` or, for
  per-pixel gates ``[B, h, w, E]``, of their mean over the pixels that cover the
  unpadded ``images`` ``[B, H, W, 3]`` (padded to ``stride``)."""
  gates = _valid(gates, images, stride)
  if gates.ndim > 2:
    gates = jnp.mean(gates, axis=tuple(range(1, gates.ndim - 1)))
  return jnp.argmax(gates, axis=-1)


@functools.lru_cache(maxsize=16)
def _counts_fn(task, model, name: str | None, num_experts: int, per_image: bool = False):
  """Jitted ``(variables, images, levels, mask, key) -> (counts [E], entropy sum)``;
  ``name`` None routes the images as they are (a real test set's inputs);
  ``per_image``: one decision per image (``image_choice``) with the mean entropy of its
  decisions (pixels) as its entropy."""
  stride = int(getattr(model, "stride", 1))

  @jax.jit
  def counts(variables, images, level_vector, mask, key):
    degraded = (images if name is None else
                degradations.apply(name, key, images, level_vector))
    _, features = task.forward(model, variables, degraded)
    top1 = _valid(jnp.argmax(features["router"], axis=-1), images, stride)  # [B] or [B,h,w]
    logits = _valid(features["router_logits"], images, stride)
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    entropy = -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
    if per_image:
      top1 = image_choice(features["router"], images, stride)
      entropy = jnp.mean(entropy.reshape(entropy.shape[0], -1), axis=1)
    weight = mask.reshape(mask.shape + (1,) * (top1.ndim - 1)).astype(jnp.float32)
    one_hot = jax.nn.one_hot(top1, num_experts) * weight[..., None]
    return one_hot.reshape(-1, num_experts).sum(0), jnp.sum(entropy * weight)
  return counts


@dataclasses.dataclass
class RoutingStats:
  """Per degradation (``names`` order), per evaluated level: ``levels[d]`` floats,
  ``counts[d]`` ``[n_levels, E]`` top-1 decisions per expert, ``entropy[d]``
  ``[n_levels]`` summed gate entropies (nats)."""

  names: tuple[str, ...]
  levels: list[list[float]]
  counts: list[np.ndarray]
  entropy: list[np.ndarray]

  @property
  def num_experts(self) -> int:
    return int(self.counts[0].shape[1])


def routing_stats(task, model, variables, split, plan, *, batch_size: int,
                  test_sets=None, per_image: bool = False) -> RoutingStats:
  """One routing pass over ``split`` (an ``ImageSet`` or a ``TestSet`` of several image
  sizes) at every level of ``plan.eval_levels`` (clean among them where the plan's
  grid has it: a full or strided grid, not an explicit list) with the evaluation's
  keys (``plan.eval_key``, batch indices running on over the size groups, as
  ``fdjax.eval.levels`` does: the images the rows were scored on). ``test_sets``:
  ``{degradation: TestSet}`` routed instead of ``split`` for those degradations; a
  real set's inputs are routed as they are, as one level ``nan``. Per-pixel decisions
  on padding (images padded to the model's stride) are not counted. ``per_image``:
  count one decision per image (``image_choice``: what the routed-experts row does)."""
  num_experts = model.num_experts
  levels, counts, entropy = [], [], []
  for name in plan.names:
    tests = (test_sets or {}).get(name, split)
    real = bool(getattr(tests, "real", False))
    counts_fn = _counts_fn(task, model, None if real else name, num_experts, per_image)
    chosen = [(float("nan"), 0)] if real else plan.eval_levels(name)
    totals = [jnp.zeros((num_experts,)) for _ in chosen]
    entropies = [jnp.zeros(()) for _ in chosen]
    for batch_index, batch in test_batches(tests, batch_size, None):
      for j, (level, index) in enumerate(chosen):
        level_vector = np.full((batch["image"].shape[0],), level, np.float32)
        c, h = counts_fn(variables, batch["image"], level_vector, batch["mask"],
                         plan.eval_key(name, index, batch_index))
        totals[j], entropies[j] = totals[j] + c, entropies[j] + h
    levels.append([level for level, _ in chosen])
    counts.append(np.asarray(jax.device_get(totals), np.float64).reshape(len(chosen), -1))
    entropy.append(np.asarray(jax.device_get(entropies), np.float64))
  return RoutingStats(tuple(plan.names), levels, counts, entropy)


def _pick(stats: RoutingStats, row: int, near_clean: bool | None, include_clean: bool = True):
  """Level rows of degradation ``row``: all, near-clean only or non-clean only."""
  name = stats.names[row]
  keep = []
  for level in stats.levels[row]:
    if not include_clean and np.isclose(level, degradations.clean_level(name), rtol=0,
                                        atol=1e-9):
      keep.append(False)
    elif near_clean is None:
      keep.append(True)
    else:
      keep.append(is_near_clean(name, level) == near_clean)
  return np.asarray(keep, bool)


def usage(stats: RoutingStats, include_clean: bool = False) -> np.ndarray:
  """float ``[len(names), num_experts]``: fraction of routing decisions per expert over the
  levels (the clean level skipped unless ``include_clean``: clean images carry no
  degradation to route by)."""
  out = np.zeros((len(stats.names), stats.num_experts))
  for row in range(len(stats.names)):
    total = stats.counts[row][_pick(stats, row, None, include_clean)].sum(0)
    out[row] = total / max(float(total.sum()), 1.0)
  return out


def routing_accuracy(stats: RoutingStats) -> dict:
  """``{name: {'near_clean', 'non_clean', 'per_level': [[level, acc], ...]}, 'near_clean':
  mean, 'non_clean': mean}``: the share of decisions sent to the degradation's own expert
  (expert i for degradation i), per level and pooled over each bucket; the means are over
  degradations (None where a bucket is empty)."""
  out: dict = {}
  for row, name in enumerate(stats.names):
    counts = stats.counts[row]
    own = counts[:, row] if row < counts.shape[1] else np.zeros(len(counts))
    per_level = [[float(level), float(o / max(c.sum(), 1.0))]
                 for level, o, c in zip(stats.levels[row], own, counts)]
    entry = {"per_level": per_level}
    for bucket, near in (("near_clean", True), ("non_clean", False)):
      keep = _pick(stats, row, near)
      entry[bucket] = (float(own[keep].sum() / max(counts[keep].sum(), 1.0)) if keep.any()
                       else None)
    out[name] = entry
  for bucket in ("near_clean", "non_clean"):
    values = [out[n][bucket] for n in stats.names if out[n][bucket] is not None]
    out[bucket] = float(np.mean(values)) if values else None
  return out


def gate_entropy(stats: RoutingStats, include_clean: bool = False) -> dict:
  """``{name: mean entropy (nats), 'mean': mean over degradations, 'max': log(E)}`` of the
  softmax gates before top-K over the decisions of the degraded levels."""
  out = {}
  for row, name in enumerate(stats.names):
    keep = _pick(stats, row, None, include_clean)
    out[name] = float(stats.entropy[row][keep].sum() / max(stats.counts[row][keep].sum(), 1.0))
  out["mean"] = float(np.mean([out[n] for n in stats.names]))
  out["max"] = math.log(stats.num_experts)
  return out


def format_usage(usage: np.ndarray, names: Sequence[str], expert_names: Sequence[str]) -> str:
  """Markdown table: rows = test degradation, columns = expert (percent)."""
  lines = ["| test degradation | " + " | ".join(f"expert {e}" for e in expert_names) + " |",
           "|:--|" + "--:|" * len(expert_names)]
  for name, row in zip(names, usage):
    lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in row) + " |")
  return "\n".join(lines)


def format_accuracy(accuracy: dict, entropy: dict, names: Sequence[str]) -> str:
  """Markdown table: per test degradation, the near-clean rule, routing accuracy on
  near-clean and on the other levels (percent) and the mean gate entropy."""

  def pct(v):
    return "-" if v is None else f"{100 * v:.1f}"

  lines = ["| test degradation | near-clean levels | routing acc. near-clean | "
           "routing acc. non-clean | gate entropy (nats) |", "|:--|:--|--:|--:|--:|"]
  for name in names:
    a = accuracy[name]
    lines.append(f"| {name} | {near_clean_rule(name)} | {pct(a['near_clean'])} | "
                 f"{pct(a['non_clean'])} | {entropy[name]:.3f} |")
  lines.append(f"| mean | | {pct(accuracy['near_clean'])} | {pct(accuracy['non_clean'])} | "
               f"{entropy['mean']:.3f} (max log E = {entropy['max']:.3f}) |")
  return "\n".join(lines)
