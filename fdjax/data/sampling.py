"""Seeded choices of examples by class: a held-out split of every class
(``stratified_split``) and a subset spread evenly over the classes (``balanced_subset``).
Like ``fdjax.data.splits``, it imports no other ``fdjax.data`` module."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, fraction: float, seed: int | np.random.SeedSequence
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Splits indices of ``labels`` (int ``[N]``) into ``(kept, held_out)``, both sorted.

  Each class contributes ``round(fraction * count)`` randomly chosen (by ``seed``)
  examples to ``held_out``; ``DataError`` when that is all of a class's examples (the
  class would vanish from ``kept``).
  """
  from fdjax.errors import DataError

  rng = np.random.default_rng(seed)
  held = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    n = int(round(fraction * idx.size))
    if fraction and n >= idx.size:
      raise DataError(f"a held-out fraction of {fraction} takes all {idx.size} example(s) "
                      f"of class {int(c)}, leaving it none to train on: lower the fraction "
                      f"or add examples of that class")
    held.append(rng.permutation(idx)[:n])
  held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
  kept = np.setdiff1d(np.arange(labels.size), held_out)
  return kept, held_out


def balanced_subset(labels: np.ndarray, n: int, seed: int | np.random.SeedSequence
                    ) -> np.ndarray:
  """Sorted indices of at most ``n`` examples of ``labels`` (int ``[N]``), spread evenly
  over classes.

  After a seeded shuffle, examples are taken round-robin over classes (the first of
  every class, then the second of every class, ...), so every class appears when
  ``n >= num_classes``.
  """
  if n >= labels.size:
    return np.arange(labels.size)
  perm = np.random.default_rng(seed).permutation(labels.size)
  shuffled = labels[perm]
  rank = np.empty(labels.size, np.int64)
  for c in np.unique(shuffled):
    mask = shuffled == c
    rank[mask] = np.arange(mask.sum())
  order = np.lexsort((np.arange(labels.size), rank))
  return np.sort(perm[order[:n]])
