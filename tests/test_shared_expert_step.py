"""The experts share one compiled train step: the degradation is chosen inside it by a
traced index (``LevelPlan.switched``), and each expert trains exactly as with its own
step built from ``plan.sampler(name)`` (the former per-degradation recipe)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax import distill
from fdjax.config_fields import load_config_file
from fdjax.degradations.plan import LevelPlan
from fdjax.study import make_context, stages, training
from fdjax.train import init_variables

QUICKSTART = pathlib.Path(__file__).resolve().parents[1] / "configs" / "quickstart.py"

NAMES = ("jpeg", "blur", "awgn", "sapn", "denoise", "haze", "rain")  # the shipped configs


def test_switched_sampler_equals_each_named_sampler():
  plan = LevelPlan(NAMES)
  images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 24, 24, 3)), jnp.uint8)
  key = jax.random.PRNGKey(3)
  switched = jax.jit(plan.switched())
  every = jax.jit(lambda k, x: [plan.sampler(n)(k, x) for n in NAMES])(key, images)  # 1 compile
  for index, name in enumerate(NAMES):
    expected = every[index]
    got = switched(key, images, jnp.int32(index))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected), err_msg=name)
    assert not np.array_equal(np.asarray(got), np.asarray(images)), name


def _config(tmp_path, name):
  config = load_config_file(f"{QUICKSTART}:tiny")
  config.degradations = "jpeg,sapn"
  config.data.max_per_split = 64
  config.experts.epochs = 1
  config.log_every_steps = 1000
  return config, str(tmp_path / name)


def test_experts_compile_one_step_and_train_as_with_their_own(tmp_path, monkeypatch):
  built = []
  real = training.make_train_step
  monkeypatch.setattr(training, "make_train_step",
                      lambda *a, **k: built.append(a[0]) or real(*a, **k))
  config, workdir = _config(tmp_path, "shared")
  ctx = make_context(config, workdir)
  clean = init_variables(ctx.model, jax.random.PRNGKey(1), ctx.dataset.image_shape)
  shared = {d: stages.expert_stage(ctx, d, clean) for d in ctx.degradations}
  assert len(built) == 1                       # one step for both experts

  config, workdir = _config(tmp_path, "own")
  own_ctx = make_context(config, workdir)
  for d in own_ctx.degradations[1:]:           # the former recipe: a step of its own
    degrade = own_ctx.plan.sampler(d)
    recipe = training.Recipe(distill.expert_loss(own_ctx.model, own_ctx.task, degrade=degrade,
                                                 feature=config.distill_feature,
                                                 cos_weight=config.experts.cos_weight),
                             init=clean, frozen=clean, pairs=(d,))
    own = training.train_stage(own_ctx, f"experts/{d}", config.experts, recipe)
    moved = False
    for a, b, c in zip(jax.tree.leaves(shared[d]), jax.tree.leaves(own), jax.tree.leaves(clean)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
      moved |= not np.allclose(np.asarray(a), np.asarray(c))
    assert moved, d
  assert len(built) == 2
  a, b = (jax.tree.leaves(shared[d]) for d in ctx.degradations)
  assert any(not np.allclose(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def test_unknown_expert_loss_is_refused(tmp_path):
  config, workdir = _config(tmp_path, "bad")
  config.experts.loss = "mse"
  ctx = make_context(config, workdir)
  with pytest.raises(ValueError, match="experts.loss must be 'iliac' or 'ce'"):
    stages.expert_stage(ctx, "jpeg", None)
