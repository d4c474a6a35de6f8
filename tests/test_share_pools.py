"""A combined stage's shares draw on their own degradation's examples
(``fdjax.data.share_pools``): share i of every batch is degradation i's, real pairs
included, as the losses read it (balance, teacher, router label)."""

import numpy as np
import pytest

from fdjax.data import ImageSet, ShareSplits, num_batches, train_batches
from fdjax.data.share_pools import training_data, training_size
from fdjax.data.splits import Dataset

CLEAN, RAIN, HAZE = 0, 1, 2   # channel 1 of every pixel: which set an example comes from


def _set(kind: int, n: int, pairs: bool) -> ImageSet:
  """``n`` 4x4 examples: channel 0 = the example's number, channel 1 = ``kind``."""
  images = np.zeros((n, 4, 4, 3), np.uint8)
  images[..., 0] = np.arange(n)[:, None, None]
  images[..., 1] = kind
  fields = {"image": images}
  if pairs:
    fields["target"] = images.copy()
  return ImageSet.from_fields(fields)


def _dataset(rain: int = 2, haze: int = 3) -> Dataset:
  clean = _set(CLEAN, 12, pairs=False)
  pairs = {}
  if rain:
    pairs["rain"] = _set(RAIN, rain, pairs=True)
  if haze:
    pairs["haze"] = _set(HAZE, haze, pairs=True)
  return Dataset("d", clean, clean, None, (), train_pairs=pairs)


NAMES = ("denoise", "rain", "haze")


def _shares(batch: dict, shares: int = 3) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Per share: (kind, example number, real flag) of each row."""
  kind = np.asarray(batch["target"])[:, 0, 0, 1]
  number = np.asarray(batch["target"])[:, 0, 0, 0]
  real = np.asarray(batch["real"])
  return list(zip(np.split(kind, shares), np.split(number, shares), np.split(real, shares)))


def test_each_share_holds_clean_tiles_and_its_own_degradations_pairs_only():
  data = training_data(_dataset(), NAMES, 3)
  assert isinstance(data, ShareSplits)
  # pools: 12 clean; 12 + 2 pairs x round(12 / 2) = 24; 12 + 3 x round(12 / 3) = 24
  assert [len(p) for p in data.pools] == [12, 24, 24]
  assert len(data) == training_size(_dataset(), NAMES, 3) == 12 + 24 + 24
  seen_real = {1: [], 2: []}
  for epoch in range(40):
    batches = list(train_batches(data, 3 * 4, seed=7, epoch=epoch))
    assert len(batches) == num_batches(len(data), 3 * 4, drop_remainder=True) == 5
    denoise_numbers = []
    for batch in batches:
      (k0, n0, r0), (k1, _, r1), (k2, _, r2) = _shares(batch)
      assert set(k0) == {CLEAN} and not r0.any()
      assert set(k1[r1]) <= {RAIN} and set(k1[~r1]) <= {CLEAN}
      assert set(k2[r2]) <= {HAZE} and set(k2[~r2]) <= {CLEAN}
      denoise_numbers += list(n0)
      seen_real[1] += list(r1)
      seen_real[2] += list(r2)
    # 20 rows from the share without pairs: every clean tile, then 8 of a second pass
    counts = np.bincount(denoise_numbers, minlength=12)
    assert counts.min() == 1 and counts.max() == 2 and counts.sum() == 20
  # a share with pairs: half its pool real, so half its rows in expectation (800 rows)
  for share in (1, 2):
    assert np.mean(seen_real[share]) == pytest.approx(0.5, abs=0.07)


def test_the_epoch_order_is_a_function_of_seed_and_epoch_so_resuming_repeats_it():
  data = training_data(_dataset(), NAMES, 3)
  rows = lambda **kw: np.concatenate([np.asarray(b["target"])[:, 0, 0, :2].ravel()
                                      for b in train_batches(data, 6, **kw)])
  whole = rows(seed=3, epoch=2)
  np.testing.assert_array_equal(whole, rows(seed=3, epoch=2))
  resumed = rows(seed=3, epoch=2, start_batch=2)
  np.testing.assert_array_equal(resumed, whole[-len(resumed):])
  assert not np.array_equal(whole, rows(seed=3, epoch=3))


def test_without_real_pairs_every_example_meets_every_degradation_once_an_epoch():
  # As the reference's one loader per degradation: each share its own permutation of
  # the whole split. (Three copies shuffled as one list gave an example one
  # degradation twice and another not at all in most epochs.)
  data = _dataset(rain=0, haze=0)
  split = training_data(data, NAMES, 3)
  assert isinstance(split, ShareSplits) and len(split) == 36 == training_size(data, NAMES, 3)
  for epoch in range(5):
    numbers = [[] for _ in NAMES]
    for batch in train_batches(split, 3 * 4, seed=1, epoch=epoch):   # 3 batches of 3 x 4
      for share, rows in enumerate(np.split(np.asarray(batch["image"])[:, 0, 0, 0], 3)):
        numbers[share].extend(rows)
    for share in numbers:
      assert sorted(share) == list(range(12))
    assert numbers[0] != numbers[1] != numbers[2]   # each share its own order
  # one share: the expert's split (its pairs repeated to half the examples)
  assert len(training_data(_dataset(), ("rain",), 1)) == 12 + 2 * 6 == training_size(
      _dataset(), ("rain",), 1)


def test_bad_share_layouts_are_refused():
  with pytest.raises(ValueError, match="one degradation per share"):
    training_data(_dataset(), ("denoise", "rain"), 3)
  data = training_data(_dataset(), NAMES, 3)
  with pytest.raises(ValueError, match="equal shares"):
    data.epoch_order(10, seed=0, epoch=0)
