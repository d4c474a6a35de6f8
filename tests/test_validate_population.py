"""fdjax.validate on EA-Adam's blocks (``fdjax.validate_population``): every bad value is
one ConfigError line naming the field and what it may be, raised by ``validate_config``
(what ``fdjax.pipeline.run`` calls before anything trains)."""

import pytest

from test_validate import QUICKSTART, REPO, assert_fails, set_field
from fdjax.config_fields import load_config_file
from fdjax.validate import validate_config


def population():
  return load_config_file(f"{QUICKSTART}:tiny,population")


def test_population_quickstart_is_valid():
  validate_config(population(), device_count=1)


BAD = [
    ("ea_adam.size", 1, "ea_adam.size must be an integer >= 2, got 1"),
    ("ea_adam.objectives", "gan", "ea_adam.objectives must be one of ('degradations', "
                                  "'perception'), got 'gan'"),
    ("ea_adam.objectives", "perception", "task must be 'restoration' for ea_adam.objectives="
                                         "'perception' (its objectives score images), got "
                                         "'classification'"),
    ("ea_adam.critic_width", 0, "ea_adam.critic_width must be an integer >= 1, got 0"),
    ("ea_adam.critic_depth", 1.5, "ea_adam.critic_depth must be an integer >= 1, got 1.5"),
    ("ea_adam.evolve_every", 0, "ea_adam.evolve_every must be an integer >= 1, got 0"),
    ("ea_adam.evolve_every", 1000, "ea_adam.evolve_every must be at most ea_adam.epochs="),
    ("ea_adam.generations", 2.5, "ea_adam.generations must be an integer >= 1, got 2.5"),
    ("ea_adam.critic_lr", -1e-4, "ea_adam.critic_lr must be a finite number > 0"),
    ("ea_adam.size", 2.5, "ea_adam.size must be an integer >= 2"),
    ("ea_adam.neighbours", 4, "ea_adam.neighbours must be an integer in 2..ea_adam.size=3 "
                              "(the member and at least one partner), got 4"),
    ("ea_adam.neighbours", 1, "ea_adam.neighbours must be an integer in 2..ea_adam.size=3"),
    ("ea_adam.max_replacements", 0, "ea_adam.max_replacements must be an integer in "
                                    "1..ea_adam.neighbours=3, got 0"),
    ("ea_adam.max_replacements", 4, "ea_adam.max_replacements must be an integer in 1..ea_adam"),
    ("ea_adam.crossover_prob", 1.5, "ea_adam.crossover_prob must be a probability in [0, 1], "
                                    "got 1.5"),
    ("ea_adam.mutation_prob", -0.1, "ea_adam.mutation_prob must be a probability in [0, 1]"),
    ("ea_adam.mutation_rate", float("nan"), "ea_adam.mutation_rate must be a probability"),
    ("ea_adam.random_partner_prob", 2, "ea_adam.random_partner_prob must be a probability"),
    ("ea_adam.eta", 0.0, "ea_adam.eta must be a finite number > 0, got 0.0"),
    ("ea_adam.eta", float("inf"), "ea_adam.eta must be a finite number > 0, got inf"),
    ("ea_adam.mutation_std", -0.03, "ea_adam.mutation_std must be a finite number >= 0"),
    ("ea_adam.fitness_examples", -1, "ea_adam.fitness_examples must be an integer >= 0 "
                                     "(0: the whole validation split), got -1"),
    ("ea_adam.freeze_first", "yes", "ea_adam.freeze_first must be True or False, got 'yes'"),
    ("ea_adam.member_loop", "scan", "ea_adam.member_loop must be one of ('auto', 'vmap', "
                                    "'unroll'), got 'scan'"),
    ("ea_adam.epochs", 0, "ea_adam.epochs must be an integer >= 1, got 0"),
    ("ea_adam_fusion.epochs", -2, "ea_adam_fusion.epochs must be an integer >= 1, got -2"),
    ("ea_adam_fusion.width", 0, "ea_adam_fusion.width must be an integer >= 1, got 0"),
    ("ea_adam_fusion.calibration_batches", 0, "ea_adam_fusion.calibration_batches must be an "
                                              "integer >= 1, got 0"),
    ("ea_adam_fusion.optimizer.lr", -1.0, "ea_adam_fusion.optimizer.lr must be finite and > 0"),
]


@pytest.mark.parametrize("field,value,fragment", BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_each_bad_population_field_is_one_config_error_line(field, value, fragment):
  config = population()
  set_field(config, field, value)
  message = assert_fails(config, fragment)
  assert message.count(" must be ") == 1, message       # that field's problem alone


def test_population_needs_a_validation_split():
  config = population()
  config.data.validation_fraction = 0.0
  assert_fails(config, "data.validation_fraction must be > 0 with method(s) "
                       "ea_adam,ea_adam_fusion", "got 0.0")
  config.methods = "fusiondistill"                       # no EA-Adam: none needed
  validate_config(config, device_count=1)


def test_neighbourhood_rules_follow_the_population_size():
  config = population()
  config.ea_adam.size = 6
  config.ea_adam.neighbours = 6                          # valid at P = 6
  config.ea_adam.max_replacements = 6
  validate_config(config, device_count=1)
  config.ea_adam.size = 1                                # size is the one problem named...
  message = assert_fails(config, "ea_adam.size must be an integer >= 2")
  assert "neighbours" not in message                      # ...not its consequences


def test_every_bad_population_field_is_named_at_once():
  config = population()
  config.ea_adam.eta = -1.0
  config.ea_adam_fusion.width = 0
  assert_fails(config, "2 config problems: ", "ea_adam.eta", "ea_adam_fusion.width")


def _restoration(model: str):
  config = load_config_file(str(REPO / "configs" / "restoration_quickstart.py"))
  config.methods = "ea_adam,ea_adam_fusion"
  config.restoration.model = model
  return config


def test_fusion_network_refuses_a_model_with_layers_it_cannot_mix():
  message = assert_fails(_restoration("nafnet"), "methods must not include 'ea_adam_fusion' "
                         "with restoration.model='nafnet'", "not NAFBlock")
  assert message.count(" must ") == 1
  validate_config(_restoration("unet"), device_count=1)   # plain convolutions: mixable
