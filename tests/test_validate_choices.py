"""``fdjax.validate`` keeps its own copies of the valid values of mode fields (it runs before
JAX is imported, so it cannot import the modules that use them). Each copy must equal the
values the using module accepts: a value added there would otherwise be refused by the
check, and one removed there would pass the check and fail mid-run."""

import pytest

from fdjax import config as config_lib
from fdjax import validate, validate_population
from fdjax.data import sources
from fdjax.degradations import NAMES, REGISTRY
from fdjax.eval import report
from fdjax.fusion import ensemble
from fdjax.moe import experts, student
from fdjax.moe.homogenize import homogenized_recipe
from fdjax.population import families
from fdjax.study import fingerprint, fused
from fdjax.tasks import classification, restoration_options
from fdjax.train import checkpoint, objectives


def test_copied_lists_equal_the_lists_their_modules_use():
  choices = validate.CHOICES
  assert choices["fusion.soup"] == fused.SOUPS
  assert validate.BN_MODES == fused.BN_MODES
  assert choices["fusion.init_batch_stats"] == fused.BN_MODES
  assert validate.LIST_CHOICES["fusion.modelsoups_variants"] == fused.BN_MODES
  assert validate.SOURCE_SCHEMES == sources.SCHEMES
  assert validate_population.FAMILIES == families.FAMILIES
  assert choices["task_balance"] == objectives.TASK_BALANCES
  assert choices["augment.cutout_fill"] == classification.CUTOUT_FILLS
  assert choices["ensemble_ties"] == ensemble.MODES
  assert choices["checkpoint.on_corrupt"] == checkpoint.ON_CORRUPT
  assert choices["on_mismatch"] == fingerprint.ON_MISMATCH
  assert set(choices["moe.router_input"]) == set(student.ROUTER_INPUTS)
  assert set(choices["model.dtype"]) == set(classification.DTYPES) == set(restoration_options.DTYPES)
  # Every degradation has a level field in the schema, and every level field names one.
  assert set(config_lib.LEVEL_NAMES) == set(REGISTRY)
  # The paper's column order (a copy: fdjax.eval is imported by fdjax.degradations).
  assert report.STANDARD_NAMES == NAMES


@pytest.mark.parametrize("stage", ["fusiondistill", "moe"])
def test_every_homogenize_mode_the_check_lets_through_is_accepted(stage):
  modes = validate.CHOICES[f"{stage}.homogenize"]
  assert homogenized_recipe("none", 3) == {}
  for mode in modes:
    if mode != "none":
      assert set(homogenized_recipe(mode, 3)) == {"grad_fn", "wrap_tx"}
  with pytest.raises(ValueError, match="unknown homogenization mode"):
    homogenized_recipe("bogus", 3)


def test_every_expert_loop_the_check_lets_through_is_resolved():
  assert {experts.resolve_expert_loop(v) for v in validate.CHOICES["moe.expert_loop"]} <= {
      "vmap", "unroll"}
  with pytest.raises(ValueError):
    experts.resolve_expert_loop("bogus")
