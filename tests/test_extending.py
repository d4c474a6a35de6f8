"""fdjax as a researcher extends it: a degradation entry replaced in a running process
takes effect, a grid must ascend, a name without a config level field is a config error
that says where to add it; a backbone that is not a ``UNetShape``, or that lacks a
feature it declares, is a config error naming the fix."""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax import validate
from fdjax.config import base_config
from fdjax.config_fields import load_config_file
from fdjax.degradations import registry
from fdjax.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_an_entry_replaced_in_the_dict_is_used_at_the_next_apply(monkeypatch):
  images = np.full((1, 8, 8, 3), 200, np.uint8)
  key = jax.random.key(0)
  assert registry.apply("awgn", key, images, 0.0).max() == 200   # compiled and cached
  blank = lambda k, x, levels: jnp.zeros_like(x)
  monkeypatch.setitem(registry.REGISTRY, "awgn",
                      dataclasses.replace(registry.REGISTRY["awgn"], apply_uint8=blank))
  assert registry.apply("awgn", key, images, 0.0).max() == 0


def test_a_grid_that_does_not_ascend_is_refused_when_the_entry_is_made():
  for grid in ((1.0, 0.5, 0.0), (0.0, float("nan"), 1.0), ()):
    with pytest.raises(ValueError, match="finite and strictly ascending"):
      dataclasses.replace(registry.REGISTRY["blur"], grid=grid)


def test_a_new_degradations_curve_is_labelled_with_its_registry_units(monkeypatch):
  from fdjax.eval.plots import x_label

  monkeypatch.setitem(registry.REGISTRY, "contrast", dataclasses.replace(
      registry.REGISTRY["blur"], name="contrast", units="contrast factor c, 0..0.9 step 0.1"))
  assert x_label("contrast") == "contrast: contrast factor c"
  assert x_label("blur") == "Gaussian blur: σ (pixels)"   # the paper's four keep theirs


def test_a_degradation_without_a_level_field_names_where_to_add_it(monkeypatch):
  monkeypatch.setitem(registry.REGISTRY, "contrast",
                      dataclasses.replace(registry.REGISTRY["blur"], name="contrast"))
  config = base_config()
  config.degradations = "jpeg,contrast"
  with pytest.raises(ConfigError, match=r"\['contrast'\] have no level field.*LEVEL_NAMES"):
    validate.validate_config(config, device_count=1)


def test_float_images_on_the_0_255_scale_are_refused_by_apply_float():
  key = jax.random.key(0)
  images = np.random.default_rng(0).uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
  with pytest.raises(ValueError, match="float images must be in 0..1, got values up to 25"):
    registry.apply_float("blur", key, images, 1.0)
  out = registry.apply_float("blur", key, images / 255.0, 1.0)   # the same, on 0..1
  assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
  # Under jit the values are unknown: no check (and no error).
  jax.jit(lambda x: registry.apply_float("blur", key, x, 1.0))(images / 255.0)


def test_a_backbone_that_is_not_a_unet_shape_is_named_before_training(monkeypatch):
  import flax.linen as nn
  from fdjax.tasks import restoration_options

  class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return nn.Conv(3, (3, 3))(x), {}

  monkeypatch.setitem(restoration_options.MODELS, "tiny", TinyNet)
  config = load_config_file(f"{REPO / 'configs' / 'restoration_quickstart.py'}:tiny")
  config.restoration.model = "tiny"
  with pytest.raises(ConfigError, match="'tiny'.*must subclass fdjax.models.unet.UNetShape"):
    validate.validate_config(config, device_count=1)


def test_a_feature_the_model_declares_but_does_not_return_is_a_config_error():
  from fdjax.distill.objectives import pick
  from fdjax.models import UNet

  with pytest.raises(ConfigError, match=r"'decoder1': UNet returns the features \['bottleneck'\]"):
    pick({"bottleneck": jnp.zeros(1)}, "decoder1", UNet())
  assert pick({"decoder1": jnp.ones(1)}, "decoder1", UNet()).shape == (1,)
