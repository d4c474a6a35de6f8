"""A stage's ``ignores``: config fields it reads that do not change its result leave
its fingerprint (changing which rows report a soup retrains nothing), while the ones
that do change it stay; records made before the rule are the same stages."""

import json
import os

import pytest

from fdjax.study import fingerprint
from test_task_balance import _context, _runner

METHODS = ("modelsoups", "fusing", "fusiondistill", "fusiondistill_moe")
FUSED = ("fused/paper", "fused/average", "fused/reestimate")


def _digests(ctx):
  runner = _runner(ctx, METHODS)
  return {n: fingerprint.digest(runner.fields(n)) for n in runner.graph}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
  return _context("quickstart.py:tiny", tmp_path_factory.mktemp("run"))


def _changed(ctx, **overrides):
  """The stages whose digest ``overrides`` (``block__field=value``) change."""
  before = _digests(ctx)
  saved = {}
  for dotted, value in overrides.items():
    block, field = dotted.split("__") if "__" in dotted else (None, dotted)
    node = ctx.config[block] if block else ctx.config
    saved[(block, field)] = node[field]
    node[field] = value
  try:
    after = _digests(ctx)
  finally:
    for (block, field), value in saved.items():
      (ctx.config[block] if block else ctx.config)[field] = value
  return {n for n in before if before[n] != after[n]}


def test_fields_that_do_not_change_a_stage_leave_its_fingerprint(ctx):
  assert ctx.config.fusion.soup == "uniform"
  # Which rows report the soups, which one Fusing starts from (that enters Fusing's
  # fingerprint through its upstream), another soup's weights, the K rows of the MoE.
  assert _changed(ctx, fusion__modelsoups_variants="paper") == set()
  assert _changed(ctx, fusion__weights="1,2,3,4") == set()
  assert _changed(ctx, moe__ks="1") == set()
  assert _changed(ctx, fusion__init_batch_stats="paper") == {
      "fusing", "fusiondistill", "fusiondistill_moe"}
  # Only the re-estimated soup reads the re-estimation's batches; only greedy evaluates.
  assert _changed(ctx, fusion__reestimate_batches=3) == {"fused/reestimate"}
  assert not _changed(ctx, eval_batch_size=32) & set(FUSED)


def test_fields_that_change_a_stage_stay_in_its_fingerprint(ctx):
  downstream = {"fusing", "fusiondistill", "fusiondistill_moe"}
  assert _changed(ctx, fusion__soup="weighted") == {*FUSED, *downstream}
  ctx.config.fusion.soup = "weighted"
  try:
    assert _changed(ctx, fusion__weights="1,2,3,4") == {*FUSED, *downstream}
  finally:
    ctx.config.fusion.soup = "uniform"
  assert _changed(ctx, fusion__soup="greedy") >= set(FUSED)
  ctx.config.fusion.soup = "greedy"
  try:
    assert set(FUSED) <= _changed(ctx, eval_batch_size=32)
  finally:
    ctx.config.fusion.soup = "uniform"
  assert _changed(ctx, moe__train_k=1) == {"fusiondistill_moe"}


def test_fields_that_change_what_every_stage_trains_change_every_fingerprint(ctx, tmp_path):
  every = set(_digests(ctx))
  assert _changed(ctx, batch_size=16) == every
  assert _changed(ctx, augment__flip=False) == every
  assert _changed(ctx, augment__cutout_size=4) == every
  # A narrower level range of one degradation (the context's level plan is built from
  # the config: a new context): its expert and every stage after it.
  narrow = _digests(_context("quickstart.py:tiny", tmp_path, levels__blur="0:1"))
  assert {n for n in every if narrow[n] != _digests(ctx)[n]} == every - {
      "clean", "experts/jpeg", "experts/awgn", "experts/sapn"}
  # The validation draw picks the best epoch only under selection='val'.
  assert _changed(ctx, eval__seed=7) == set()
  ctx.config.selection = "val"
  try:
    assert _changed(ctx, eval__seed=7) == every
  finally:
    ctx.config.selection = "last"


def test_a_record_made_before_the_rule_is_reused_and_re_recorded(ctx):
  runner = _runner(ctx, METHODS)
  names = list(runner.graph)
  for name in names:   # what the code before the rule recorded, and a stage's work
    fingerprint.check_or_record(ctx.stage_dir(name), name, runner.fields(name, rule=3))
    open(os.path.join(ctx.stage_dir(name), "marker"), "w").close()
  assert {n for n in names if runner.fields(n, rule=3) != runner.fields(n)} >= {
      *FUSED, "fusing", "fusiondistill", "fusiondistill_moe"}
  for name in names:
    digest = runner.check(name)
    assert digest == fingerprint.digest(runner.fields(name))
    assert os.path.exists(os.path.join(ctx.stage_dir(name), "marker")), name   # kept
    with open(os.path.join(ctx.stage_dir(name), fingerprint.FILE)) as f:
      assert json.load(f)["digest"] == digest


def test_experts_without_iliac_ignore_the_distillation_feature(ctx, tmp_path):
  """Only ILIAC's feature term reads ``distill_feature`` in an expert: changing the
  feature FusionDistill distils retrained every expert (hours on the restoration
  configs) for the same weights; under ILIAC it stays in their fingerprint."""
  experts = {n for n in _digests(ctx) if n.startswith("experts/")}
  assert ctx.config.experts.loss == "iliac"   # the paper's recipe
  assert experts <= _changed(ctx, distill_feature="stage2")
  ctx.config.experts.loss = "ce"              # restoration's
  try:
    changed = _changed(ctx, distill_feature="stage2")
    assert not changed & experts and {"fusiondistill", "fusiondistill_moe"} <= changed
  finally:
    ctx.config.experts.loss = "iliac"
  # Records made before (rule 5: with the feature) are the same stages: reused.
  own = _context("quickstart.py:tiny", tmp_path, experts__loss="ce")
  runner = _runner(own, METHODS)
  assert experts <= {n for n in runner.graph if runner.fields(n, rule=5) != runner.fields(n)}
  for name in runner.graph:
    fingerprint.check_or_record(own.stage_dir(name), name, runner.fields(name, rule=5))
    open(os.path.join(own.stage_dir(name), "marker"), "w").close()
  for name in runner.graph:
    assert runner.check(name) == fingerprint.digest(runner.fields(name))
    assert os.path.exists(os.path.join(own.stage_dir(name), "marker")), name
