"""``config.task_balance``: the combined-degradation losses weight each degradation's
share by mean/own loss ('loss'), against closed forms and hand-weighted losses; and the
distilling stages' other own loss field, ``output_weight``, reaching their losses and
fingerprints."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fdjax.distill import fusiondistill_loss
from fdjax.tasks import NO_AUGMENT, ClassificationTask
from fdjax.train.objectives import share_weights, supervised_loss
from fdjax.trees import stack_trees

UNIT = ClassificationTask("unit", NO_AUGMENT)


class Tiny(nn.Module):
  """BatchNorm + Dense over the flattened image: ``(logits [B, 3], {'stage3': ...})``."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.BatchNorm(use_running_average=not train)(x.reshape(x.shape[0], -1))
    return nn.Dense(3)(h), {"stage3": h}


def test_share_weights_closed_form_and_gradient():
  losses = jnp.asarray([0.5, 2.0, 1.0])
  np.testing.assert_allclose(share_weights(losses, "none"), [1, 1, 1])
  mean = 3.5 / 3
  np.testing.assert_allclose(share_weights(losses, "loss"), [mean / 0.5, mean / 2, mean / 1],
                             rtol=1e-6)
  c = jnp.asarray([1.0, 4.0, 9.0])

  def balanced(x):  # L_s = c_s x^2; value = mean L_s; d/dx = mean_s (mean L / L_s) 2 c_s x
    per_share = c * x ** 2
    return jnp.mean(share_weights(per_share, "loss") * per_share)

  x = 1.5
  assert float(balanced(x)) == pytest.approx(float(jnp.mean(c)) * x ** 2)
  assert float(jax.grad(balanced)(x)) == pytest.approx(2 * float(jnp.mean(c)) * x, rel=1e-6)
  with pytest.raises(ValueError, match="task_balance must be one of"):
    share_weights(losses, "pcgrad")


def _batch_and_variables():
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.integers(0, 256, (4, 4, 4, 3)), jnp.uint8),
           "label": jnp.asarray([0, 1, 2, 2], jnp.int32)}
  variables = Tiny().init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)), train=False)
  return batch, variables


def _hand_weighted_grads(variables, batch, weights_fn):
  """Gradient of mean_s(w_s * CE_s) with w_s from weights_fn(CE per share), no gradient."""
  def loss(params):
    x = UNIT.model_input(batch["image"])
    (logits, _), _ = Tiny().apply({"params": params, **{"batch_stats": variables["batch_stats"]}},
                                  x, train=True, mutable=["batch_stats"])
    per_share = UNIT.per_example_loss(logits, batch["label"]).reshape(2, 2).mean(axis=1)
    weights = jax.lax.stop_gradient(weights_fn(per_share))
    return jnp.mean(weights * per_share)

  return jax.grad(loss)(variables["params"])


@pytest.mark.parametrize("balance", ["none", "loss"])
def test_supervised_loss_weights_the_shares(balance):
  batch, variables = _batch_and_variables()
  loss_fn = supervised_loss(Tiny(), UNIT, lambda key, x: x, shares=2, balance=balance)
  grads = jax.grad(lambda p: loss_fn(p, variables["batch_stats"], batch, jax.random.key(1))[0])(
      variables["params"])
  by_hand = _hand_weighted_grads(
      variables, batch, (lambda l: jnp.ones(2)) if balance == "none" else (lambda l: l.mean() / l))
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(by_hand)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  if balance == "loss":  # and it differs from the plain mean (the shares' losses differ)
    plain = _hand_weighted_grads(variables, batch, lambda l: jnp.ones(2))
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(grads),
                                                      jax.tree.leaves(plain)))


def test_fusiondistill_loss_weights_only_the_task_term():
  """alpha * mean_s(w_s CE_s) + gamma * cos: the cosine terms are never reweighted."""
  batch, variables = _batch_and_variables()
  experts = stack_trees([variables, variables])
  kwargs = dict(degrade=lambda key, x: x, num_experts=2, alpha=1.0, gammas=[0.0, 0.0])
  balanced = fusiondistill_loss(Tiny(), UNIT, balance="loss", **kwargs)
  grads = jax.grad(lambda p: balanced(p, variables["batch_stats"], batch, jax.random.key(1),
                                      experts)[0])(variables["params"])
  by_hand = _hand_weighted_grads(variables, batch, lambda l: l.mean() / l)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(by_hand)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="task_balance"):
    fusiondistill_loss(Tiny(), UNIT, balance="equal", **kwargs)


def _context(config_file: str, workdir, **overrides):
  """The run context of ``configs/<config_file>`` in ``workdir``; ``overrides``:
  ``field=value`` (the config's) or ``block__field=value`` (a block's)."""
  from pathlib import Path

  from fdjax.config_fields import load_config_file
  from fdjax.study import make_context

  config = load_config_file(f"{Path(__file__).resolve().parents[1] / 'configs' / config_file}")
  for dotted, value in overrides.items():
    block, field = dotted.split("__") if "__" in dotted else (None, dotted)
    (config[block] if block else config)[field] = value
  return make_context(config, str(workdir))


def _runner(ctx, methods=("fusiondistill", "vanilla")):
  """A Runner over the stages of ``methods`` (names) in ``ctx``."""
  from fdjax import methods as methods_lib
  from fdjax import pipeline
  from fdjax.study.runner import Runner

  return Runner(ctx, pipeline.stage_graph(ctx, [methods_lib.get(m) for m in methods]))


def _digests(ctx, methods) -> dict[str, str]:
  """Every stage's fingerprint digest for ``methods`` in ``ctx``."""
  from fdjax.study import fingerprint

  runner = _runner(ctx, methods)
  return {n: fingerprint.digest(runner.fields(n)) for n in runner.graph}


def test_restoration_joint_base_is_balanced_and_fingerprinted(tmp_path):
  """Restoration trains its base on all tasks jointly: with a balance set, the base's
  fingerprint changes and, through it, every stage built from it."""
  ctx = _context("restoration_quickstart.py:tiny", tmp_path)
  before = _digests(ctx, ("fusiondistill",))
  ctx.config.task_balance = "loss"
  after = _digests(ctx, ("fusiondistill",))
  assert before["clean"] != after["clean"]
  assert all(before[n] != after[n] for n in ("fusiondistill", "fused/average",
                                             *(f"experts/{d}" for d in ctx.degradations)))


def test_a_stage_block_overrides_the_config_balance():
  from fdjax.config_restoration import restoration_config
  from fdjax.train.objectives import task_balance

  config = restoration_config()
  assert task_balance(config) == task_balance(config, "fusiondistill") == "none"
  config.task_balance = "loss"
  assert task_balance(config, "fusiondistill") == "loss"   # '' = the config's
  config.fusiondistill.task_balance = "none"
  assert task_balance(config, "fusiondistill") == "none"
  assert task_balance(config, "vanilla") == task_balance(config) == "loss"
  assert task_balance(ml_collections.ConfigDict({"clean": {"epochs": 1}}), "clean") == "none"


class _Built(Exception):
  pass


@pytest.mark.parametrize("stage", ["fusiondistill", "scratch"])
def test_a_stage_builds_its_loss_with_its_own_balance(stage, tmp_path, monkeypatch):
  """The stage's loss gets the block's balance (not the config's), and only that stage's
  fingerprint changes; Scratch's compiled step is not shared with a differently balanced
  stage (the step's key carries the balance)."""
  from fdjax import distill
  from fdjax.methods import finetune, fusiondistill
  from fdjax.train import objectives

  ctx = _context("restoration_quickstart.py:tiny", tmp_path, task_balance="loss")
  methods = ("fusiondistill", "scratch")
  before = _digests(ctx, methods)
  ctx.config[stage].task_balance = "none"
  after = _digests(ctx, methods)
  assert {n for n in before if before[n] != after[n]} == {stage}

  seen = {}

  def record(*args, balance, **kwargs):
    seen["balance"] = balance
    raise _Built

  runner = _runner(ctx, methods)
  if stage == "fusiondistill":
    monkeypatch.setattr(distill, "fusiondistill_loss", record)
    build = lambda: fusiondistill._stage(runner)
  else:
    def recipe_of(ctx, name, cfg, recipe):
      seen.update(balance=recipe.loss_fn.balance, step=recipe.shared_step)
      raise _Built

    def loss(*args, balance, **kwargs):
      fn = objectives.supervised_loss(*args, balance=balance, **kwargs)
      fn.balance = balance
      return fn

    monkeypatch.setattr(finetune, "supervised_loss", loss)
    monkeypatch.setattr(finetune, "train_stage", recipe_of)
    build = lambda: finetune.combined_stage(runner, "scratch", None)
  with pytest.raises(_Built):
    build()
  assert seen["balance"] == "none" and objectives.task_balance(ctx.config) == "loss"
  if stage == "scratch":
    assert seen["step"] == ("combined", "none")


@pytest.mark.parametrize("own", ["none", "loss"])
def test_a_stage_with_its_own_balance_ignores_the_config_wide_one(own, tmp_path):
  """Classification (the base trains on clean images): FusionDistill with its own
  balance keeps its fingerprint whatever the config-wide balance is; Vanilla FT, which
  takes the config-wide one, does not."""
  def digests(balance):
    return _digests(_context("quickstart.py:tiny", tmp_path, task_balance=balance,
                             fusiondistill__task_balance=own), ("fusiondistill", "vanilla"))

  none, loss = digests("none"), digests("loss")
  assert none["fusiondistill"] == loss["fusiondistill"]
  assert none["vanilla"] != loss["vanilla"]


def test_a_stage_recorded_with_both_balances_is_reused_and_re_recorded(tmp_path):
  """Before ``fingerprint_fields.OVERRIDDEN_BY`` a stage with its own balance recorded the
  config-wide one too (restoration: the base has its own here, so every stage below
  it recorded other upstream digests): such records are the same stages, kept and
  re-recorded; a record of another config still stops the run."""
  import json
  import os

  from fdjax.study import fingerprint

  balances = dict(task_balance="loss", clean__task_balance="none",
                  fusiondistill__task_balance="none")
  runner = _runner(_context("restoration_quickstart.py:tiny", tmp_path, **balances))
  names = list(runner.graph)
  for name in names:  # what the code before the rule recorded
    fingerprint.check_or_record(runner.ctx.stage_dir(name), name, runner.fields(name, rule=4))
    open(os.path.join(runner.ctx.stage_dir(name), "marker"), "w").close()
  changed = {n for n in names if runner.fields(n, rule=4) != runner.fields(n)}
  assert {"clean", "fusiondistill", "vanilla"} <= changed   # vanilla: through the base
  for name in names:
    assert runner.check(name) == fingerprint.digest(runner.fields(name))
    stage_dir = runner.ctx.stage_dir(name)
    assert os.path.exists(os.path.join(stage_dir, "marker")), name   # not retrained
    with open(os.path.join(stage_dir, fingerprint.FILE)) as f:
      assert json.load(f)["digest"] == runner.check(name)

  other = _runner(_context("restoration_quickstart.py:tiny", tmp_path / "other", **balances))
  other.ctx.config.fusiondistill.epochs += 1
  name = "fusiondistill"
  legacy_of_other = other.fields(name, rule=4)
  fingerprint.check_or_record(runner.ctx.stage_dir(name), name, legacy_of_other,
                              "retrain")   # the record now holds another config's
  open(os.path.join(runner.ctx.stage_dir(name), "marker"), "w").close()   # and its work
  fresh = _runner(_context("restoration_quickstart.py:tiny", tmp_path, **balances))
  with pytest.raises(fingerprint.FingerprintMismatchError, match="epochs"):
    fresh.check(name)


@pytest.mark.parametrize("stage,method", [("fusiondistill", "fusiondistill"),
                                          ("moe", "fusiondistill_moe")])
def test_output_weight_reaches_its_stage_loss_and_only_its_fingerprint(stage, method, tmp_path,
                                                                       monkeypatch):
  """``<block>.output_weight`` (response distillation) is passed to the stage's loss and
  changes that stage's fingerprint alone; 0 leaves the fingerprint of runs recorded
  before the field (``fingerprint_fields.ADDED_FIELDS``)."""
  from fdjax import distill
  from fdjax.methods import fusiondistill
  from fdjax.moe import student
  from fdjax.study import fingerprint_fields
  from fdjax.train import init_variables

  ctx = _context("restoration_quickstart.py:tiny", tmp_path)
  runner = _runner(ctx, (method,))
  name = {"moe": "fusiondistill_moe"}.get(stage, stage)
  # 0: the field is left out, so the fields (and digest) are those of a run recorded
  # before it existed; any other value enters them
  assert ctx.config[stage].output_weight == 0.0
  assert "output_weight" not in runner.fields(name)["block"]
  assert fingerprint_fields.ADDED_FIELDS["block.output_weight"] == 0.0
  before = _digests(ctx, (method,))
  ctx.config[stage].output_weight = 0.5
  assert _runner(ctx, (method,)).fields(name)["block"]["output_weight"] == 0.5
  after = _digests(ctx, (method,))
  assert {n for n in before if before[n] != after[n]} == {name}

  seen = {}

  def record(*args, output_weight, **kwargs):
    seen["output_weight"] = output_weight
    raise _Built

  monkeypatch.setattr(distill, "fusiondistill_loss", record)
  with pytest.raises(_Built):
    if stage == "fusiondistill":
      fusiondistill._stage(_runner(ctx, (method,)))
    else:
      variables = init_variables(ctx.model, jax.random.key(0), ctx.dataset.image_shape)
      student.recipe_parts(ctx, variables, [variables] * len(ctx.degradations))
  assert seen["output_weight"] == 0.5


def test_homogenize_keeps_both_distilling_stages_recorded_fingerprints(tmp_path):
  """``fusiondistill.homogenize`` is new: at 'none' the FusionDistill stage's fields are
  those recorded before it (``fingerprint_fields.ADDED_FIELDS``, by block); the MoE student's
  block always held ``homogenize``, so its records keep it. Another value changes that
  stage's fingerprint alone."""
  from fdjax.study import fingerprint_fields

  ctx = _context("restoration_quickstart.py:tiny", tmp_path)
  methods = ("fusiondistill", "fusiondistill_moe")
  runner = _runner(ctx, methods)
  assert "homogenize" not in runner.fields("fusiondistill")["block"]
  assert runner.fields("fusiondistill_moe")["block"]["homogenize"] == "none"
  before = _digests(ctx, methods)
  ctx.config.fusiondistill.homogenize = "pcgrad"
  assert _runner(ctx, methods).fields("fusiondistill")["block"]["homogenize"] == "pcgrad"
  after = _digests(ctx, methods)
  assert {n for n in before if before[n] != after[n]} == {"fusiondistill"}
  assert fingerprint_fields.added_fields("moe") == {
      k: v for k, v in fingerprint_fields.ADDED_FIELDS.items() if "@" not in k}
