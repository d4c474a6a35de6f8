"""Every file in configs/, with each variant it declares, loads and passes validation; a
misspelt variant is an error that names the real ones, never the full config run instead."""

import importlib.util
import pathlib

import pytest

from fdjax.config import config_variants
from fdjax.config_fields import load_config_file
from fdjax.validate import validate_config

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.py"))


def declared_variants(path: pathlib.Path) -> tuple[str, ...]:
  spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.VARIANTS


def with_data_here(config):
  """``config`` with its data paths pointed at this repository: validation checks only
  that they exist, and ``../shared`` is absent on CI."""
  if "root" in config.data:
    config.data.root = str(REPO)
  if config.data.source.startswith("folder:"):
    config.data.source = f"folder:{REPO}"
  return config


CASES = [(path.name, variant) for path in CONFIGS
         for variant in (None, *declared_variants(path))]


def test_every_config_is_covered():
  assert len(CONFIGS) >= 8
  assert {name for name, _ in CASES} == {path.name for path in CONFIGS}
  assert ("restoration_3task.py", None) in CASES    # the full settings, not only the small ones


@pytest.mark.parametrize("name,variant", CASES)
def test_config_and_variant_is_valid(name, variant):
  path = REPO / "configs" / name
  config = load_config_file(f"{path}:{variant}" if variant else str(path))
  validate_config(with_data_here(config), device_count=1)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_misspelt_variant_is_an_error_naming_the_real_ones(path):
  known = declared_variants(path)
  with pytest.raises(ValueError, match=f"unknown {path.stem} variant") as error:
    load_config_file(f"{path}:{known[0]}x")
  assert all(f":{k}" in str(error.value) for k in known)


def test_config_variants():
  assert config_variants(None, ("a", "b"), "c") == set()
  assert config_variants("a", ("a", "b"), "c") == {"a"}
  assert config_variants("a,b", ("a", "b"), "c", combine=True) == {"a", "b"}
  with pytest.raises(ValueError, match=r"unknown c variant\(s\) \['a,b'\]; use :a, :b \(one "
                                       r"at a time: this config's variants do not combine\) or"):
    config_variants("a,b", ("a", "b"), "c")     # only configs that combine take a list
  with pytest.raises(ValueError, match=r"\['z'\]; use :a, :b \(comma-separated"):
    config_variants("a,z", ("a", "b"), "c", combine=True)


@pytest.mark.parametrize("name", ["cifar10_resnet56.py", "cifar100_resnet56.py",
                                  "cifar10_folder.py"])
def test_the_paper_configs_train_on_the_whole_training_split(name):
  # The reference trains on all 50,000 images (its yaml files: validation_split 0.0);
  # the paper's 90/10 split only tuned hyperparameters. Nothing is held out, and
  # nothing needs a validation split.
  config = load_config_file(str(REPO / "configs" / name))
  assert config.data.validation_fraction == 0.0
  assert config.selection == "last" and config.fusion.soup != "greedy"


def test_the_paper_code_overrides_are_valid_config_overrides():
  """``fdjax.config.PAPER_CODE`` (quoted by the CIFAR configs) names real fields and
  values: applied to a config of the same schema (the quickstart's: no data to find)
  they validate and change what they say."""
  from fdjax.config import PAPER_CODE
  config = load_config_file(str(REPO / "configs" / "quickstart.py"))
  for flag in PAPER_CODE:
    dotted, value = flag[len("--config."):].split("=")
    *blocks, last = dotted.split(".")
    node = config
    for b in blocks:
      node = node[b]
    node[last] = value
  validate_config(config)
  assert config.degradations.endswith("sapn_paper") and config.ensemble_ties == "paper_code"
  assert config.fusion.init_batch_stats == "paper"
