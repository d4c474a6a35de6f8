"""What a stage trains on enters its fingerprint: the data's contents (a data set replaced at
the same path, with the same sizes, is not reused) and the degradations' order (share i,
expert i and soup weight i are degradation i); records made before are trusted once and
recorded with them. A classification evaluation's cache is keyed on its test split."""

import dataclasses
import json
import os

import numpy as np
import pytest

from fdjax.data import ImageSet
from fdjax.study import fingerprint
from fdjax.study.evaluator import Evaluator
from test_task_balance import _context, _runner

METHODS = ("modelsoups", "fusing", "fusiondistill", "fusiondistill_moe")
SEVERAL = {"fused/paper", "fused/average", "fused/reestimate", "fusing", "fusiondistill",
           "fusiondistill_moe"}   # the stages that train on (or fuse) every degradation


def _digests(ctx) -> dict[str, str]:
  runner = _runner(ctx, METHODS)
  return {n: fingerprint.digest(runner.fields(n)) for n in runner.graph}


def _one_pixel_changed(split: ImageSet) -> ImageSet:
  fields = dict(split.fields)
  fields["image"] = fields["image"].copy()
  fields["image"][0, 0, 0, 0] ^= 1
  return ImageSet.from_fields(fields)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
  return _context("quickstart.py:tiny", tmp_path_factory.mktemp("run"))


def test_reordered_degradations_change_the_stages_of_several(ctx, tmp_path):
  names = ctx.config.degradations.split(",")
  assert len(names) > 2
  reordered = _context("quickstart.py:tiny", tmp_path, degradations=",".join(names[::-1]))
  before, after = _digests(ctx), _digests(reordered)
  assert set(before) == set(after) and SEVERAL <= set(before)
  assert {n for n in before if before[n] != after[n]} == SEVERAL   # not clean, not experts


def test_data_replaced_with_the_same_sizes_changes_every_stage(ctx):
  before = _digests(ctx)
  for split in ("train", "validation"):
    replaced = dataclasses.replace(ctx, dataset=dataclasses.replace(
        ctx.dataset, **{split: _one_pixel_changed(getattr(ctx.dataset, split))}))
    after = _digests(replaced)
    assert {n for n in before if before[n] != after[n]} == set(before), split


def test_a_record_without_the_contents_is_trusted_once_then_checked(ctx, tmp_path):
  ctx = dataclasses.replace(ctx, workdir=str(tmp_path))
  runner = _runner(ctx, METHODS)
  for name in runner.graph:   # what the code before recorded, and a stage's work
    fingerprint.check_or_record(ctx.stage_dir(name), name, runner.fields(name, rule=1))
    open(os.path.join(ctx.stage_dir(name), "marker"), "w").close()
  for name in runner.graph:
    digest = runner.check(name)   # the same stage: kept, recorded with the contents
    assert os.path.exists(os.path.join(ctx.stage_dir(name), "marker")), name
    with open(os.path.join(ctx.stage_dir(name), fingerprint.FILE)) as f:
      record = json.load(f)
    assert record["digest"] == digest and record["fields"]["data"]["content"]
  replaced = dataclasses.replace(ctx, dataset=dataclasses.replace(
      ctx.dataset, train=_one_pixel_changed(ctx.dataset.train)))
  with pytest.raises(fingerprint.FingerprintMismatchError, match=r"data\.content: \w+ -> \w+"):
    _runner(replaced, METHODS).check("clean")


def test_a_classification_evaluation_cache_is_keyed_on_the_test_split(ctx):
  replaced = dataclasses.replace(ctx, dataset=dataclasses.replace(
      ctx.dataset, test=_one_pixel_changed(ctx.dataset.test)))
  assert Evaluator(ctx).dir != Evaluator(replaced).dir
  assert Evaluator(ctx).dir == Evaluator(dataclasses.replace(ctx)).dir


def test_a_classification_cache_made_before_the_key_is_kept_once(ctx, tmp_path):
  """Its folder lacked the test split's digest: renamed to today's name, not evaluated
  again (every classification run's evaluations were orphaned)."""
  ctx = dataclasses.replace(ctx, workdir=str(tmp_path))
  today = Evaluator(ctx).dir
  before = today.replace(f"_c{ctx.dataset.test.digest()[:10]}", "")
  assert before != today
  os.makedirs(before)
  open(os.path.join(before, "clean-abc.json"), "w").write("{}")
  assert Evaluator(ctx).dir == today
  assert os.listdir(today) == ["clean-abc.json"] and not os.path.exists(before)


def test_the_content_digest_reads_every_field_and_only_the_stage_s_pairs():
  images = np.zeros((4, 8, 8, 3), np.uint8)
  a = ImageSet(images, np.zeros(4, np.int32))
  assert a.digest() != ImageSet(images, np.ones(4, np.int32)).digest()
  assert a.digest() != ImageSet(images.reshape(4, 4, 16, 3), np.zeros(4, np.int32)).digest()
  assert a.digest() == ImageSet(images.copy(), np.zeros(4, np.int32)).digest()
  pairs = ImageSet.from_fields({"image": images, "target": images})
  other = ImageSet.from_fields({"image": images, "target": images + 1})
  from fdjax.data.splits import Dataset
  make = lambda p: Dataset("d", a, a, None, (), train_pairs={"rain": p})  # noqa: E731
  assert make(pairs).content_digest(["rain"]) != make(other).content_digest(["rain"])
  assert make(pairs).content_digest(["haze"]) == make(other).content_digest(["haze"])


def test_an_evaluation_cache_is_keyed_on_the_weights_and_the_level_stride(ctx):
  # A retrained model of the same shapes must not get the old model's cached results,
  # nor a run re-scored at another eval.level_stride the results of the first.
  from fdjax.degradations.plan import LevelPlan
  from fdjax.study.evaluator import variables_digest

  w = {"params": {"w": np.zeros(3, np.float32)}, "batch_stats": {}}
  changed = {"params": {"w": np.array([0.0, 0.0, 1e-6], np.float32)}, "batch_stats": {}}
  assert variables_digest(w) == variables_digest({"params": {"w": np.zeros(3, np.float32)},
                                                  "batch_stats": {}})
  assert variables_digest(w) != variables_digest(changed)
  evaluator = Evaluator(ctx)
  assert evaluator.path("fusiondistill", w) != evaluator.path("fusiondistill", changed)
  strided = dataclasses.replace(ctx, plan=LevelPlan(ctx.plan.names, ranges=ctx.plan.ranges,
                                                    stride=ctx.plan.stride + 1))
  assert Evaluator(strided).dir != evaluator.dir
