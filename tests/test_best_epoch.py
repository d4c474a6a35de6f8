"""Best-epoch selection (``fdjax.study.best_epoch.BestOnValidation``): a NaN validation
score is an error, not a silent "no better epoch", and a finished stage whose best
epoch's variables are lost says how to get them back."""

import os
import shutil
import types

import jax
import ml_collections
import numpy as np
import optax
import pytest

from fdjax.data import ImageSet
from fdjax.models import UNet
from fdjax.study.best_epoch import BestOnValidation
from fdjax.tasks.restoration import RestorationTask
from fdjax.train import CorruptCheckpointError, NonFiniteLossError, init_variables, make_mesh
from fdjax.train.state import create_train_state


def _selector(tmp_path):
  model = UNet(width=4, depth=1)
  validation = ImageSet.from_fields({"image": np.random.default_rng(0).integers(
      0, 256, (2, 8, 8, 3), dtype=np.uint8)})
  variables = init_variables(model, jax.random.key(0), (8, 8, 3))
  ctx = types.SimpleNamespace(
      task=RestorationTask(patch=None, flip=False, rot90=False), mesh=make_mesh(),
      config=ml_collections.ConfigDict(dict(eval_batch_size=2, eval=dict(seed=0))),
      dataset=types.SimpleNamespace(validation=validation),
      stage_dir=lambda name: str(tmp_path / name),
      template_variables=lambda model=None: variables)
  return BestOnValidation(ctx, "clean", None, model), variables


def test_a_nan_validation_score_stops_the_stage(tmp_path):
  selector, variables = _selector(tmp_path)
  state = create_train_state(variables, optax.sgd(0.1), jax.random.PRNGKey(0), make_mesh())
  assert np.isfinite(selector.on_epoch_end(state, 0)["val_psnr"])
  nan = state.replace(params=jax.tree.map(lambda p: p * np.nan, state.params))
  with pytest.raises(NonFiniteLossError, match="epoch 2: the validation psnr is NaN"):
    selector.on_epoch_end(nan, 1)


def test_lost_best_variables_say_to_retrain_the_stage(tmp_path):
  selector, variables = _selector(tmp_path)
  state = create_train_state(variables, optax.sgd(0.1), jax.random.PRNGKey(0), make_mesh())
  selector.on_epoch_end(state, 0)
  shutil.rmtree(tmp_path / "clean" / "best")
  with pytest.raises(CorruptCheckpointError, match="best epoch's variables") as info:
    selector.best()
  assert f"delete the stage folder {tmp_path / 'clean'}" in info.value.hint


def test_a_save_cut_short_keeps_the_previous_best_whole(tmp_path, monkeypatch):
  """The old best was deleted before the new one was saved: a run killed during the save
  was left with no best variables and a record of the epoch before."""
  from fdjax.study import best_epoch

  selector, variables = _selector(tmp_path)
  state = create_train_state(variables, optax.sgd(0.1), jax.random.PRNGKey(0), make_mesh())
  selector.on_epoch_end(state, 0)
  first = jax.tree.map(np.asarray, selector.best())
  # zero weights: the residual U-Net returns its input, the clean validation target itself
  better = state.replace(params=jax.tree.map(lambda p: p * 0, state.params))

  def killed(path, variables):
    (tmp_path / "clean" / "best.new").mkdir()
    raise KeyboardInterrupt   # as a kill during the write

  monkeypatch.setattr(best_epoch, "save_variables", killed)
  with pytest.raises(KeyboardInterrupt):
    selector.on_epoch_end(better, 1)
  monkeypatch.undo()
  assert selector._record()["epoch"] == 1
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, selector.best()), first)
  selector.on_epoch_end(better, 1)   # the leftover best.new is cleared; epoch 2 is the best
  assert selector._record()["epoch"] == 2
  assert not (tmp_path / "clean" / "best.new").exists()
  assert all(np.all(np.asarray(p) == 0) for p in jax.tree.leaves(selector.best()["params"]))



@pytest.mark.parametrize("killed_at", ["record", "aside", "in", "replace"])
def test_a_swap_cut_short_leaves_a_best_that_its_record_describes(tmp_path, monkeypatch,
                                                                  killed_at):
  """The swap's every step stopped in turn: the next read mends it (``_recover``), and
  the best variables are the epoch the record names (before: the old best deleted first,
  a kill in that window left none, and the advice was to retrain the stage)."""
  from fdjax.study import best_epoch

  selector, variables = _selector(tmp_path)
  state = create_train_state(variables, optax.sgd(0.1), jax.random.PRNGKey(0), make_mesh())
  selector.on_epoch_end(state, 0)
  first = jax.tree.map(np.asarray, selector.best())
  better = state.replace(params=jax.tree.map(lambda p: p * 0, state.params))
  calls = {"rename": 0}

  def rename(src, dst):
    calls["rename"] += 1
    if (killed_at, calls["rename"]) in (("aside", 1), ("in", 2)):
      raise KeyboardInterrupt
    os.rename(src, dst)

  def replace(src, dst):
    if killed_at == "replace":
      raise KeyboardInterrupt
    os.replace(src, dst)

  real_write_json = best_epoch.write_json

  def write_json(path, record):
    if killed_at == "record":
      raise KeyboardInterrupt
    real_write_json(path, record)

  fake_os = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
  fake_os.rename, fake_os.replace = rename, replace
  monkeypatch.setattr(best_epoch, "os", fake_os)
  monkeypatch.setattr(best_epoch, "write_json", write_json)
  with pytest.raises(KeyboardInterrupt):
    selector.on_epoch_end(better, 1)
  monkeypatch.undo()
  best, epoch = jax.tree.map(np.asarray, selector.best()), selector._record()["epoch"]
  expected = first if epoch == 1 else jax.tree.map(np.zeros_like, first)
  assert epoch == (1 if killed_at in ("record", "aside", "in") else 2)
  jax.tree.map(np.testing.assert_array_equal, best["params"], expected["params"])
  assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == ["best", "best.json"]



@pytest.mark.parametrize("killed_at", ["remove", "rename", "rmtree"])
def test_a_repair_cut_short_is_finished_by_the_next_one(tmp_path, monkeypatch, killed_at):
  """A swap stopped with the old best moved aside, then its repair stopped too: the record
  of the new epoch was left beside the old best, and the next repair moved it in (epoch 2
  recorded, epoch 1's variables kept)."""
  from fdjax.study import best_epoch

  selector, variables = _selector(tmp_path)
  state = create_train_state(variables, optax.sgd(0.1), jax.random.PRNGKey(0), make_mesh())
  selector.on_epoch_end(state, 0)
  first = jax.tree.map(np.asarray, selector.best())
  better = state.replace(params=jax.tree.map(lambda p: p * 0, state.params))

  def patched(**calls):
    fake = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    for name, fn in calls.items():
      setattr(fake, name, fn)
    return fake

  renames = []

  def second_rename_killed(src, dst):
    renames.append(src)
    if len(renames) == 2:
      raise KeyboardInterrupt
    os.rename(src, dst)

  def killed(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(best_epoch, "os", patched(rename=second_rename_killed))
  with pytest.raises(KeyboardInterrupt):   # best.old, best.new, best.json.new, best.json
    selector.on_epoch_end(better, 1)
  if killed_at == "rmtree":
    monkeypatch.setattr(best_epoch.shutil, "rmtree", killed)
  else:
    monkeypatch.setattr(best_epoch, "os", patched(**{killed_at: killed}))
  with pytest.raises(KeyboardInterrupt):
    selector.best()
  monkeypatch.undo()
  best, epoch = jax.tree.map(np.asarray, selector.best()), selector._record()["epoch"]
  assert epoch == 1
  jax.tree.map(np.testing.assert_array_equal, best["params"], first["params"])
  assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == ["best", "best.json"]


@pytest.mark.parametrize("higher", [True, False])
def test_a_metric_s_direction_decides_what_beats_what_and_its_sign(higher):
  # One rule for every optimiser of a metric: the best epoch (better), the greedy soup
  # and EA-Adam's objectives (signed: maximised; MOEA/D minimises -signed).
  from fdjax.tasks.base import MetricSpec

  spec = MetricSpec("m", "M", "", higher_is_better=higher)
  assert spec.better(2.0, 1.0) is higher and spec.better(1.0, 2.0) is not higher
  assert not spec.better(1.0, 1.0)
  assert spec.better(1.0, None) and not spec.better(float("nan"), None)
  np.testing.assert_array_equal(spec.signed(np.array([3.0, -1.0])),
                                [3.0, -1.0] if higher else [-3.0, 1.0])
  assert spec.better(2.0, 1.0) == (spec.signed(2.0) > spec.signed(1.0))
