"""The level plan: which degradations a study uses, at which levels, with which keys.

One object answers every level question of a study, for training, model selection,
evaluation and router usage alike:

* ``names``: the degradations, in the order of the combined batch's shares;
* ``grid(name)``: the levels in use, float64, in the degradation's own units (see
  ``fdjax.degradations``): the registry's full grid, or the part of it inside the
  configured ``[low, high]`` range (``config.levels.<name> = 'low:high'``);
* ``eval_levels(name)``: every ``stride``-th point of that grid, both ends kept, as
  ``(level, full_grid_index)`` pairs; the index of the FULL registry grid selects the
  fixed evaluation key, so a reduced plan sees the same images as a full one. An
  explicit list (``config.eval_levels.<name> = '15,25,50'``, points of the registry
  grid) replaces the strided grid for that degradation (the denoising tables' sigmas);
* ``eval_key(name, full_grid_index, batch_index)``: the fixed key of one eval batch;
* ``sampler(name)`` / ``combined()``: training-time degradation of a batch with levels
  drawn uniformly over the grid points in use.

Levels stay Python/numpy floats from the registry grid to the results: never keys of
a JSON object (those become strings).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdjax.config import parse_list
from fdjax.degradations import registry

# The base of the evaluation keys. 301 is the seed of the reference's fix_seed_noise_sl,
# which its test scripts never call (they seed 123 and draw from the loader's workers);
# here any fixed base gives every method the same degraded test images.
DEFAULT_EVAL_SEED = 301


def name_id(name: str) -> int:
  """A stable non-negative int32 id for a degradation name (CRC-32, not Python's hash)."""
  return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF


def eval_key(seed: int, name: str, level_index: int, batch_index: int) -> jax.Array:
  """``fold_in(fold_in(fold_in(PRNGKey(seed), name_id(name)), level_index), batch_index)``.

  ``level_index`` is the position in the FULL registry grid of ``name``. Returns a raw
  ``uint32 [2]`` key.
  """
  key = jax.random.fold_in(jax.random.PRNGKey(seed), name_id(name))
  return jax.random.fold_in(jax.random.fold_in(key, level_index), batch_index)


def stride_levels(grid: Sequence[float], stride: int) -> np.ndarray:
  """Every ``stride``-th point of ``grid``, always including its first and last point."""
  grid = np.asarray(grid)
  if stride < 1:
    raise ValueError(f"level_stride must be >= 1, got {stride}")
  picked = list(range(0, len(grid), stride))
  if picked[-1] != len(grid) - 1:
    picked.append(len(grid) - 1)
  return grid[picked]


def level_indices(name: str, levels: Sequence[float]) -> list[int]:
  """Positions of ``levels`` in the full grid of ``name`` (ValueError if one is off-grid)."""
  grid = registry.levels(name)
  out = []
  for level in levels:
    i = int(np.argmin(np.abs(grid - float(level))))
    if not np.isclose(grid[i], float(level), rtol=0, atol=1e-6):
      raise ValueError(f"level {level} is not on the {name} grid {grid.tolist()}")
    out.append(i)
  return out


def parse_range(name: str, text: str) -> tuple[float, float] | None:
  """``'low:high'`` (either side may be empty) -> inclusive bounds; '' -> None (full grid)."""
  text = str(text).strip()
  if not text:
    return None
  parts = text.split(":")
  if len(parts) != 2:
    raise ValueError(f"levels.{name} must be 'low:high' in {name}'s units "
                     f"({registry.get(name).units}), got {text!r}")
  grid = registry.levels(name)
  try:
    low = float(parts[0]) if parts[0].strip() else float(grid[0])
    high = float(parts[1]) if parts[1].strip() else float(grid[-1])
  except ValueError as e:
    raise ValueError(f"levels.{name}={text!r}: bounds must be numbers") from e
  return low, high


@dataclasses.dataclass(frozen=True)
class LevelPlan:
  """Degradations and their levels for one study (see the module docstring)."""

  names: tuple[str, ...]
  ranges: tuple[tuple[str, float, float], ...] = ()   # (name, low, high), inclusive
  stride: int = 1
  eval_seed: int = DEFAULT_EVAL_SEED
  explicit: tuple[tuple[str, tuple[float, ...]], ...] = ()  # (name, evaluation levels)

  def __post_init__(self):
    for name in self.names:
      registry.get(name)  # ValueError listing the valid names
    if self.stride < 1:
      raise ValueError(f"eval.level_stride must be >= 1, got {self.stride}")
    for name, low, high in self.ranges:
      full = registry.levels(name)
      tol = 1e-6 * max(1.0, abs(full[-1]))
      if not (full[0] - tol <= low <= high <= full[-1] + tol):
        raise ValueError(f"levels.{name}: range [{low:g}, {high:g}] must lie inside "
                         f"[{full[0]:g}, {full[-1]:g}] ({registry.get(name).units}) with low <= high")
      if not self.grid(name).size:
        raise ValueError(f"levels.{name}: no grid level inside [{low:g}, {high:g}]")
    for name, levels in self.explicit:
      if not levels:
        raise ValueError(f"eval_levels.{name} names no level")
      try:
        level_indices(name, levels)
      except ValueError as e:
        raise ValueError(f"eval_levels.{name}: {e}") from None

  @classmethod
  def from_config(cls, config) -> "LevelPlan":
    """From ``config.degradations``, ``config.levels`` and ``config.eval``."""
    names = tuple(parse_list(config.degradations))
    if not names:
      raise ValueError("config.degradations names no degradation")
    ranges = []
    for name in names:
      registry.get(name)
      bounds = parse_range(name, config.levels.get(name, "") if "levels" in config else "")
      if bounds is not None:
        ranges.append((name, *bounds))
    explicit = []
    for name, text in (config.get("eval_levels") or {}).items():
      if parse_list(text) and name in names:  # levels of unused degradations: ignored
        try:
          explicit.append((name, tuple(float(t) for t in parse_list(text))))
        except ValueError:
          raise ValueError(f"eval_levels.{name} must be comma-separated numbers in "
                           f"{name}'s units, got {text!r}") from None
    return cls(names, tuple(ranges), int(config.eval.level_stride), int(config.eval.seed),
               tuple(explicit))

  def _range(self, name: str) -> tuple[float, float] | None:
    return next(((lo, hi) for n, lo, hi in self.ranges if n == name), None)

  def grid_indices(self, name: str) -> np.ndarray:
    """int ``[n]``: positions in the full registry grid of the levels in use."""
    full = registry.levels(name)
    bounds = self._range(name)
    if bounds is None:
      return np.arange(len(full))
    tol = 1e-6 * max(1.0, abs(full[-1]))
    return np.nonzero((full >= bounds[0] - tol) & (full <= bounds[1] + tol))[0]

  def grid(self, name: str) -> np.ndarray:
    """float64 ``[n]``: the levels in use, ascending, in the degradation's own units."""
    return registry.levels(name)[self.grid_indices(name)]

  def eval_levels(self, name: str) -> list[tuple[float, int]]:
    """``[(level, full_grid_index), ...]``: the explicit levels of ``name`` if any, else
    every ``stride``-th level in use, ends kept."""
    listed = dict(self.explicit).get(name)
    if listed is not None:
      return [(float(level), i) for level, i in zip(listed, level_indices(name, listed))]
    picked = stride_levels(self.grid_indices(name), self.stride)
    full = registry.levels(name)
    return [(float(full[i]), int(i)) for i in picked]

  def eval_key(self, name: str, level_index: int, batch_index: int) -> jax.Array:
    return eval_key(self.eval_seed, name, level_index, batch_index)

  def sample(self, name: str, key: jax.Array, n: int) -> jax.Array:
    """float32 ``[n]``: levels drawn uniformly over the grid points in use (jit-safe)."""
    return registry.sample_from_grid(self.grid(name), key, n)

  def sampler(self, name: str):
    """``degrade(key, images uint8 [B,H,W,3]) -> uint8``: ``name`` at sampled levels."""

    def degrade(key, images):
      k_level, k_apply = jax.random.split(key)
      return registry.apply(name, k_apply, images, self.sample(name, k_level, images.shape[0]))

    return degrade

  def switched(self):
    """``degrade(key, images, index) -> uint8``: degradation ``names[index]`` at sampled
    levels, ``index`` an int32 scalar that may be traced (``lax.switch``): one program
    serves every degradation (the experts' shared train step), each call running only its
    own branch. Equals ``sampler(names[index])(key, images)``."""
    branches = [self.sampler(n) for n in self.names]

    def degrade(key, images, index):
      return jax.lax.switch(index, branches, key, images)

    return degrade

  def combined(self):
    """``degrade(key, images)``: share i (the i-th of ``len(names)`` equal consecutive
    slices) gets degradation i at sampled levels: the reference's combined batch."""
    names = self.names

    def degrade(key, images):
      if images.shape[0] % len(names):
        raise ValueError(f"batch of {images.shape[0]} does not split into {len(names)} equal "
                         f"shares for degradations {names}")
      shares = jnp.split(images, len(names))
      keys = jax.random.split(key, len(names))
      return jnp.concatenate([self.sampler(n)(k, s) for n, k, s in zip(names, keys, shares)])

    return degrade

  def describe(self) -> Mapping[str, str]:
    """``{name: 'low..high, n levels (k evaluated)'}`` for logs and reports."""
    return {n: f"{self.grid(n)[0]:g}..{self.grid(n)[-1]:g}, {len(self.grid(n))} levels "
               f"({len(self.eval_levels(n))} evaluated)" for n in self.names}
