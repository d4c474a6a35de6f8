"""Weight-space fusion of experts ("model soups", Wortsman et al. 2022).

FusionDistill fine-tunes one expert per degradation from a common clean model,
so the experts share an architecture and live in one loss basin; averaging
their weights gives a single model. All functions are pure and work on any
pytree, in particular Flax variables ``{'params': ..., 'batch_stats': ...}``.

BatchNorm running statistics need a decision of their own (``batch_stats``):

* ``'average'``: average them with the same weights as the parameters.
* ``'paper'``: keep the FIRST model's running statistics, as the FusionDistill
  code does (it loads the averaged ``state_dict`` of the parameters over the first
  expert). Those statistics describe the first expert's activations on its own
  degradation, not the soup's -- likely why the paper's ModelSoups row sits at
  chance accuracy.
* ``'reestimate'`` is not done here: average first, then call
  ``fdjax.fusion.batchnorm.reestimate_batch_stats`` on data.

Leaves are combined in float32 and cast back to their own floating dtype;
non-floating leaves (counters) are taken from the first model. ``FrozenDict``
inputs are unfrozen, so frozen and plain dict variables mix; soups are dicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.core
import jax
import jax.numpy as jnp
import numpy as np

BATCH_STATS_MODES = ("average", "paper")


def uniform_soup(variables_list: Sequence[Any], *, batch_stats: str = "average") -> Any:
  """The uniform average of ``variables_list`` (same structure and shapes).

  Returns a pytree with the structure of ``variables_list[0]``; under
  ``batch_stats='paper'`` its ``'batch_stats'`` collection is the first model's.
  """
  _check_mode(batch_stats)
  variables_list = _unfrozen(variables_list)
  _check_compatible(variables_list)
  n = len(variables_list)
  return _combine(variables_list, [1.0 / n] * n, batch_stats)


def weighted_soup(variables_list: Sequence[Any], weights: Sequence[float], *,
                  batch_stats: str = "average") -> Any:
  """``sum_i w_i * variables_i`` with ``w`` = ``weights`` normalised to sum 1.

  ``weights``: one non-negative finite number per model, not all zero.
  """
  _check_mode(batch_stats)
  variables_list = _unfrozen(variables_list)
  _check_compatible(variables_list)
  w = np.asarray(weights, np.float64).reshape(-1)
  if w.shape[0] != len(variables_list):
    raise ValueError(f"got {w.shape[0]} weights for {len(variables_list)} models")
  if not np.all(np.isfinite(w)) or np.any(w < 0):
    raise ValueError(f"soup weights must be finite and >= 0, got {w.tolist()}")
  if w.max() == 0:
    raise ValueError("soup weights are all zero")
  w = w / w.max()   # first: a sum of huge weights (1e308 each) would overflow to inf
  return _combine(variables_list, (w / w.sum()).tolist(), batch_stats)


def greedy_soup(variables_list: Sequence[Any], score_fn: Callable[[Any], float], *,
                batch_stats: str = "average") -> tuple[Any, list[int]]:
  """Greedy soup (Wortsman et al. 2022, Recipe 1).

  Ingredients are sorted by their own held-out score ``score_fn(variables)``
  (higher is better; stable, so equal scores keep list order). The soup starts
  from the best one; each next ingredient is kept if the uniform soup of the
  chosen ones plus it scores ``>=`` the best score so far (``>=`` as in the
  authors' code: a neutral ingredient is kept).

  Under ``batch_stats='paper'`` every candidate soup keeps the running statistics
  of the best single ingredient (first in the chosen list). To re-estimate them
  per candidate instead, wrap ``score_fn`` so it re-estimates before scoring.

  Returns ``(soup, chosen)``: the uniform soup of the chosen ingredients and their
  indices into ``variables_list``, in the order they were added (best first).
  ``score_fn`` is called ``2 * len(variables_list) - 1`` times.
  """
  _check_mode(batch_stats)
  variables_list = _unfrozen(variables_list)
  _check_compatible(variables_list)
  own = [float(score_fn(v)) for v in variables_list]
  # NaN scores sort last and never win a comparison.
  order = sorted(range(len(own)), key=lambda i: -own[i] if not math.isnan(own[i]) else math.inf)
  chosen = [order[0]]
  best = own[order[0]]
  for i in order[1:]:
    candidate = uniform_soup([variables_list[j] for j in chosen + [i]], batch_stats=batch_stats)
    score = float(score_fn(candidate))
    if score >= best:
      chosen.append(i)
      best = score
  soup = uniform_soup([variables_list[j] for j in chosen], batch_stats=batch_stats)
  return soup, chosen


def _check_mode(batch_stats: str) -> None:
  if batch_stats == "reestimate":
    raise ValueError("batch_stats='reestimate': average with batch_stats='average', then call "
                     "fdjax.fusion.reestimate_batch_stats(model, soup, image_batches, ...)")
  if batch_stats not in BATCH_STATS_MODES:
    raise ValueError(f"batch_stats must be one of {BATCH_STATS_MODES}, got {batch_stats!r}")


def _unfrozen(variables_list: Sequence[Any]) -> list[Any]:
  return [flax.core.unfreeze(v) if isinstance(v, Mapping) else v for v in variables_list]


def _check_compatible(variables_list: Sequence[Any]) -> None:
  """Raises ValueError naming the first leaf path where a model differs from model 0."""
  if len(variables_list) == 0:
    raise ValueError("cannot make a soup of an empty list of models")
  ref = _leaves_by_path(variables_list[0])
  for k, variables in enumerate(variables_list[1:], start=1):
    other = _leaves_by_path(variables)
    for path, leaf in ref.items():
      if path not in other:
        raise ValueError(f"model {k} differs from model 0: leaf {path!r} is missing")
      if np.shape(leaf) != np.shape(other[path]):
        raise ValueError(f"model {k} differs from model 0 at leaf {path!r}: shape "
                         f"{np.shape(other[path])} vs {np.shape(leaf)}")
    extra = [p for p in other if p not in ref]
    if extra:
      raise ValueError(f"model {k} differs from model 0: extra leaf {extra[0]!r}")
    if jax.tree_util.tree_structure(variables) != jax.tree_util.tree_structure(variables_list[0]):
      # Same paths and shapes but different containers (e.g. tuple vs list).
      raise ValueError(f"model {k} has a different pytree container structure than model 0")


def _leaves_by_path(tree: Any) -> dict[str, Any]:
  """``{'params/stem_conv/kernel': leaf, ...}`` in flattening order."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {_path_str(path): leaf for path, leaf in flat}


def _path_str(path) -> str:
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def _combine(variables_list: Sequence[Any], weights: list[float], batch_stats: str) -> Any:
  """Weighted sum of compatible pytrees; weights already sum to 1.

  Accumulates model by model with two jitted tree functions, so a tree structure
  compiles once whatever the number of models (greedy soups try many counts).
  """
  acc = _scaled(variables_list[0], jnp.float32(weights[0]))
  for w, variables in zip(weights[1:], variables_list[1:]):
    acc = _axpy(acc, variables, jnp.float32(w))
  first = variables_list[0]
  soup = _cast_like(acc, first)
  if batch_stats == "paper" and isinstance(first, Mapping) and "batch_stats" in first:
    # FusionDistill's code: the first expert's running statistics are kept as they are.
    soup = {**soup, "batch_stats": first["batch_stats"]}
  return soup


def _is_float(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.floating)


@jax.jit
def _scaled(tree, w):
  """``w * tree`` in float32; non-floating leaves pass through."""
  return jax.tree_util.tree_map(lambda x: w * x.astype(jnp.float32) if _is_float(x) else x, tree)


@jax.jit
def _axpy(acc, tree, w):
  """``acc + w * tree`` on floating leaves; ``acc`` (first model's) elsewhere."""
  return jax.tree_util.tree_map(
      lambda a, x: a + w * x.astype(jnp.float32) if _is_float(x) else a, acc, tree)


@jax.jit
def _cast_like(acc, like):
  return jax.tree_util.tree_map(lambda a, x: a.astype(jnp.result_type(x)), acc, like)
