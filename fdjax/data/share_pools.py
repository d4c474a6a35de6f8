"""The training data of a combined stage: one share of every batch per degradation.

A combined stage's batch is ``S`` equal consecutive shares, share i degraded by
degradation i (``LevelPlan.combined``), balanced, taught and (MoE) routed as degradation i
(``fdjax.train.objectives``, ``fdjax.distill``). Clean tiles suit any share: they are
degraded on device. Real training pairs (``Dataset.train_pairs``) belong to one
degradation, so when any degradation has them each share draws on its own pool
(``ShareSplits``):

* pool i: every clean tile, plus degradation i's real pairs repeated
  ``round(N / P_i)`` times (at least once), as its expert trains (half real, half
  synthetic; ``Dataset.training_split``);
* an epoch: as many examples as the pools hold together, ``sum_i |pool i| // (S * b)``
  batches of ``S * b`` (``b`` = batch_size per share): the steps of one shuffled pool of
  them all, as when the pairs were mixed into every share (the stages' epochs and
  schedules keep their meaning). Share i of batch k is rows ``k*b .. (k+1)*b`` of pool
  i's shuffled passes (permutations ``np.random.default_rng((seed, epoch, i, j))``,
  j = 0, 1, ...), so a pool smaller than the mean shows some of its examples twice in
  an epoch and a larger one a random subset of its examples (another each epoch).

Without real pairs every pool is the whole training split, and each share draws its own
permutation of it: in an epoch every example meets every degradation once (the last
``N mod b`` of each share's order dropped), as with the reference's one loader per
degradation. Those loaders are all seeded alike (``torch.Generator().manual_seed(123)``,
the same worker seeds), so there share i of a step holds the same images as share 0,
with the same flips and crops; fdjax's shares hold different images (a step sees ``S *
b`` distinct examples, not ``b``). (Until 2026-12-06, night, ``S`` copies of the split shuffled as one list: an example
met a given degradation once per epoch only on average; stage fingerprints tell the two
apart.)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fdjax.data.splits import Dataset, ImageSet, _pair_repeats, with_pairs

# Each share draws on its own pool: its degradation's real pairs, and its own permutation
# of the clean examples (stage fingerprints, ``fdjax.study.fingerprint``).
POOLS = "own"


@dataclasses.dataclass(frozen=True, eq=False)
class ShareSplits:
  """A combined stage's training split with one pool of examples per share.

  split: the examples of every pool, fields ``{'image', 'target', 'real'}`` (uint8 ``[M,
  H, W, 3]`` 0..255, bool ``[M]``); pools: int64 index arrays into it, one per share, in
  the shares' order. ``len()`` is the examples the pools hold together (``sum |pool
  i|``), so ``num_batches(len(s), S * b)`` is an epoch's batch count."""

  split: ImageSet
  pools: tuple[np.ndarray, ...]

  @property
  def fields(self) -> dict:
    return self.split.fields

  def __len__(self) -> int:
    return sum(len(p) for p in self.pools)

  def epoch_order(self, batch_size: int, *, seed: int, epoch: int) -> np.ndarray:
    """int64 ``[num_batches * batch_size]``: rows of ``split``, batch after batch, share i
    of each batch (its i-th ``batch_size // S`` rows) from pool i. A pure function of
    ``(seed, epoch)``, so a resumed run sees the batches it would have seen."""
    shares = len(self.pools)
    if batch_size % shares:
      raise ValueError(f"batch of {batch_size} does not split into {shares} equal shares")
    per_share = batch_size // shares
    rows = len(self) // batch_size * per_share   # of each pool

    def passes(i, pool):
      order = [pool[np.random.default_rng((seed, epoch, i, j)).permutation(len(pool))]
               for j in range(max(1, -(-rows // len(pool))))]
      return np.concatenate(order)[:rows].reshape(-1, per_share)

    drawn = [passes(i, pool) for i, pool in enumerate(self.pools)]
    return np.concatenate(drawn, axis=1).reshape(-1)


def training_data(dataset: Dataset, names: tuple[str, ...] = (), shares: int = 1):
  """What a stage with ``shares`` shares and the real pairs of ``names`` trains on: an
  ``ImageSet`` (one share: ``dataset.training_split(names)``) or a ``ShareSplits``
  (several shares, each its own pool: without real pairs the whole training split for
  each; with some, ``names`` must name the shares, in order)."""
  if shares == 1:
    return dataset.training_split(names)
  paired = [n for n in names if n in dataset.train_pairs]
  if not paired:
    return ShareSplits(dataset.train, tuple(np.arange(len(dataset.train)) for _ in range(shares)))
  if len(names) != shares:
    raise ValueError(f"{shares} shares with real pairs need one degradation per share, "
                     f"got {list(names)}")
  clean = dataset.train.images
  split = with_pairs(clean, [dataset.train_pairs[n] for n in paired])
  pools, start = [], len(clean)
  for name in names:
    pool = [np.arange(len(clean))]
    if name in dataset.train_pairs:
      count = len(dataset.train_pairs[name])
      times = _pair_repeats(len(clean), count, 1)
      pool.append(np.tile(np.arange(start, start + count), times))
      start += count
    pools.append(np.concatenate(pool))
  return ShareSplits(split, tuple(pools))


def training_size(dataset: Dataset, names: tuple[str, ...] = (), shares: int = 1) -> int:
  """``len(training_data(dataset, names, shares))``, without building it."""
  if shares == 1:
    return dataset.training_size(names)
  if not any(name in dataset.train_pairs for name in names):
    return shares * len(dataset.train)
  return sum(dataset.training_size((name,)) for name in names)
