"""Fusion of per-degradation experts: model soups, BatchNorm re-estimation, plurality vote.

References are independent: numpy averages, closed-form scores, numpy convolutions.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdjax.fusion import (ensemble_predict, greedy_soup, reestimate_batch_stats, uniform_soup,
                          weighted_soup)
from fdjax.models import cifar_resnet, normalize
from fdjax.tasks import ClassificationTask

EXPERTS = ("jpeg", "blur", "awgn", "sapn")
CIFAR_INPUT = ClassificationTask("cifar10").model_input
UNIT_INPUT = ClassificationTask("unit").model_input


def flat(tree):
  """{'params/a/b': np.ndarray} for comparisons against numpy."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}


@pytest.fixture(scope="module")
def resnet8_experts():
  """Four CIFAR ResNet-8 'experts' (random params and running statistics, no init compute)."""
  model = cifar_resnet(8, 10)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  rng = np.random.default_rng(0)
  experts = []
  for _ in EXPERTS:
    params = jax.tree_util.tree_map(
        lambda s: jnp.asarray(0.1 * rng.normal(size=s.shape), jnp.float32), shapes["params"])
    stats = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.uniform(0.5, 2.0, s.shape), jnp.float32), shapes["batch_stats"])
    experts.append({"params": params, "batch_stats": stats})
  return model, experts


# ---------------------------------------------------------------- soups


def test_uniform_soup_is_numpy_average(resnet8_experts):
  _, experts = resnet8_experts
  soup = flat(uniform_soup(experts, batch_stats="average"))
  ref = [flat(e) for e in experts]
  assert any("batch_stats" in k for k in soup) and any("params" in k for k in soup)
  for path, leaf in soup.items():
    expected = np.mean([r[path].astype(np.float64) for r in ref], axis=0)
    np.testing.assert_allclose(leaf, expected, rtol=1e-6, atol=1e-7, err_msg=path)
    assert leaf.dtype == ref[0][path].dtype


def test_paper_mode_keeps_first_experts_running_stats(resnet8_experts):
  _, experts = resnet8_experts
  soup = uniform_soup(experts, batch_stats="paper")
  first, got = flat(experts[0]["batch_stats"]), flat(soup["batch_stats"])
  assert first.keys() == got.keys()
  for path in first:
    np.testing.assert_array_equal(got[path], first[path])
  # Parameters are still averaged.
  average = flat(uniform_soup(experts)["params"])
  for path, leaf in flat(soup["params"]).items():
    np.testing.assert_array_equal(leaf, average[path])


def test_weighted_soup_is_numpy_weighted_average(resnet8_experts):
  _, experts = resnet8_experts
  weights = [3.0, 0.0, 1.0, 4.0]  # unnormalised; a zero weight drops the blur expert
  soup = flat(weighted_soup(experts, weights))
  ref = [flat(e) for e in experts]
  w = np.asarray(weights) / sum(weights)
  for path, leaf in soup.items():
    expected = sum(wi * r[path].astype(np.float64) for wi, r in zip(w, ref))
    np.testing.assert_allclose(leaf, expected, rtol=1e-5, atol=1e-6, err_msg=path)
  # Equal weights give the uniform soup.
  uniform = flat(uniform_soup(experts))
  for path, leaf in flat(weighted_soup(experts, [2.0] * 4)).items():
    np.testing.assert_allclose(leaf, uniform[path], rtol=1e-6, atol=1e-7)


def _pt(w):
  return {"params": {"w": jnp.asarray(w, jnp.float32)},
          "batch_stats": {"mean": jnp.asarray(w, jnp.float32) * 10}}


def test_greedy_soup_skips_the_harmful_ingredient_and_follows_score_order():
  # score = -||w||^2 (optimum at 0). A, B and D point in three directions 120 degrees
  # apart, so their average is near 0; C points along A and pulls the soup away.
  a, b = [1.0, 0.0], [-0.505, 0.8747]    # own scores -1.000, -1.0201
  c, d = [1.04, 0.0], [-0.525, -0.9093]  # own scores -1.0816, -1.1025
  calls = []

  def score(v):
    calls.append(1)
    return -float(np.sum(np.asarray(v["params"]["w"]) ** 2))

  ingredients = [_pt(d), _pt(c), _pt(a), _pt(b)]  # listed out of score order
  soup, chosen = greedy_soup(ingredients, score)
  # Sorted: A(2), B(3), C(1), D(0). {A,B} = -0.25; {A,B,C} = -0.347 < -0.25 -> skip C;
  # {A,B,D} = -2.3e-4 >= -0.25 -> keep D.
  assert chosen == [2, 3, 0]
  expected = np.mean([a, b, d], axis=0)
  np.testing.assert_allclose(soup["params"]["w"], expected, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(soup["batch_stats"]["mean"], 10 * expected, rtol=1e-5, atol=1e-6)
  assert len(calls) == 2 * len(ingredients) - 1
  # Order matters: adding in list order (D first) would have accepted C.
  assert score(uniform_soup([_pt(d), _pt(c)])) >= score(_pt(d))
  # 'paper' keeps the running statistics of the best single ingredient (A).
  soup_paper, _ = greedy_soup(ingredients, score, batch_stats="paper")
  np.testing.assert_allclose(soup_paper["batch_stats"]["mean"], 10 * np.asarray(a))


def test_greedy_soup_keeps_neutral_ingredients():
  # Wortsman et al.'s code compares with >=: an ingredient that leaves the score unchanged stays.
  ingredients = [_pt([1.0, 2.0])] * 3
  _, chosen = greedy_soup(ingredients, lambda v: 0.5)
  assert chosen == [0, 1, 2]


def test_soup_errors():
  with pytest.raises(ValueError, match="empty"):
    uniform_soup([])
  # batch_stats sorts before params: it is the first differing leaf.
  with pytest.raises(ValueError, match=r"leaf 'batch_stats/mean': shape \(3,\) vs \(2,\)"):
    uniform_soup([_pt([1.0, 2.0]), _pt([1.0, 2.0, 3.0])])
  missing = {"params": {"v": jnp.zeros(2)}, "batch_stats": {"mean": jnp.zeros(2)}}
  with pytest.raises(ValueError, match="leaf 'params/w' is missing"):
    uniform_soup([_pt([1.0, 2.0]), missing])
  with pytest.raises(ValueError, match=">= 0"):
    weighted_soup([_pt([1.0]), _pt([2.0])], [1.0, -1.0])
  with pytest.raises(ValueError, match="all zero"):
    weighted_soup([_pt([1.0]), _pt([2.0])], [0.0, 0.0])
  # Weights whose sum overflows gave an all-zero soup (w / inf); they mean equal shares.
  huge = weighted_soup([_pt([1.0]), _pt([2.0])], [1e308, 1e308])
  np.testing.assert_allclose(np.asarray(huge["params"]["w"]), [1.5])
  with pytest.raises(ValueError, match="3 weights for 2 models"):
    weighted_soup([_pt([1.0]), _pt([2.0])], [1.0, 1.0, 1.0])
  with pytest.raises(ValueError, match="reestimate_batch_stats"):
    uniform_soup([_pt([1.0])], batch_stats="reestimate")
  with pytest.raises(ValueError, match="batch_stats must be"):
    uniform_soup([_pt([1.0])], batch_stats="median")
  with pytest.raises(ValueError, match="empty"):
    greedy_soup([], lambda v: 0.0)


# ---------------------------------------------------------------- BatchNorm re-estimation


class InputBN(nn.Module):
  """BatchNorm directly on the normalised image, spatial mean, linear classifier."""

  bn_momentum: float = 0.9
  num_classes: int = 2

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, name="bn")(x)
    pooled = x.mean(axis=(1, 2))
    return nn.Dense(self.num_classes, name="classifier")(pooled), {"pooled": pooled}


def _input_bn_variables(kernel=None, mean=(0.0, 0.0, 0.0)):
  """Hand-built InputBN variables (no init compute): identity affine BN, given classifier."""
  kernel = np.zeros((3, 2), np.float32) if kernel is None else kernel
  return {"params": {"bn": {"scale": jnp.ones(3), "bias": jnp.zeros(3)},
                     "classifier": {"kernel": jnp.asarray(kernel, jnp.float32),
                                    "bias": jnp.zeros(2)}},
          "batch_stats": {"bn": {"mean": jnp.asarray(mean, jnp.float32), "var": jnp.ones(3)}}}


def _random_batches(sizes, hw=8, seed=0):
  rng = np.random.default_rng(seed)
  # Different brightness per batch, so per-batch statistics differ.
  return [np.clip(rng.normal(60 + 50 * i, 30, (n, hw, hw, 3)), 0, 255).astype(np.uint8)
          for i, n in enumerate(sizes)]


def test_reestimate_on_input_bn_is_mean_of_per_batch_stats():
  model = InputBN()
  # Garbage incoming statistics must not matter.
  variables = _input_bn_variables(mean=(1e3, 1e3, 1e3))
  batches = _random_batches([4, 4, 2])
  out = reestimate_batch_stats(model, variables, iter(batches), model_input=CIFAR_INPUT)
  xs = [np.asarray(normalize(b, "cifar10"), np.float64) for b in batches]
  # update_bn(momentum=None): equal weight per batch, biased within-batch variance.
  mean_ref = np.mean([x.mean(axis=(0, 1, 2)) for x in xs], axis=0)
  var_ref = np.mean([x.var(axis=(0, 1, 2)) for x in xs], axis=0)
  np.testing.assert_allclose(out["batch_stats"]["bn"]["mean"], mean_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out["batch_stats"]["bn"]["var"], var_ref, rtol=1e-4, atol=1e-6)
  assert out["params"] is variables["params"]
  # Statistics kept in bfloat16 come back in bfloat16 (the model's checkpoints keep them so).
  low = jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16), variables["batch_stats"])
  out = reestimate_batch_stats(model, {**variables, "batch_stats": low}, iter(batches),
                               model_input=CIFAR_INPUT)
  assert {x.dtype for x in jax.tree.leaves(out["batch_stats"])} == {jnp.dtype(jnp.bfloat16)}
  np.testing.assert_allclose(np.asarray(out["batch_stats"]["bn"]["mean"], np.float32), mean_ref,
                             rtol=1e-2)


def test_reestimate_on_a_mesh_compiles_once():
  # The batches of a run are placed on its mesh, so _accumulate's outputs are too: the
  # first call's zeros, left uncommitted, compiled a second program for the same shapes.
  from fdjax.fusion import batchnorm
  from fdjax.train import make_mesh
  from fdjax.train.mesh import data_sharding

  model, variables = InputBN(), _input_bn_variables(mean=(1e3, 1e3, 1e3))
  batches = _random_batches([4, 4, 4])
  placed = [jax.device_put(b, data_sharding(make_mesh())) for b in batches]
  batchnorm._accumulate.clear_cache()
  out = reestimate_batch_stats(model, variables, iter(placed), model_input=CIFAR_INPUT)
  assert batchnorm._accumulate._cache_size() == 1
  ref = reestimate_batch_stats(model, variables, iter(batches), model_input=CIFAR_INPUT)
  for a, b in zip(jax.tree.leaves(out["batch_stats"]), jax.tree.leaves(ref["batch_stats"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def _numpy_conv3x3_same(x, kernel):
  """NHWC x HWIO, stride 1, zero padding 1, no bias."""
  b, h, w, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((b, h, w, kernel.shape[-1]))
  for di in range(3):
    for dj in range(3):
      out += np.einsum("bhwc,co->bhwo", xp[:, di:di + h, dj:dj + w], kernel[di, dj])
  return out


def test_reestimate_resnet8_stem_norm_matches_numpy_conv(resnet8_experts):
  model, experts = resnet8_experts
  variables = experts[0]
  batches = _random_batches([3, 3, 3], hw=32, seed=1)
  out = reestimate_batch_stats(model, variables, batches, model_input=CIFAR_INPUT)
  kernel = np.asarray(variables["params"]["stem_conv"]["kernel"], np.float64)
  ys = [_numpy_conv3x3_same(np.asarray(normalize(b, "cifar10"), np.float64), kernel)
        for b in batches]
  mean_ref = np.mean([y.mean(axis=(0, 1, 2)) for y in ys], axis=0)
  var_ref = np.mean([y.var(axis=(0, 1, 2)) for y in ys], axis=0)
  stem = out["batch_stats"]["stem_norm"]
  np.testing.assert_allclose(stem["mean"], mean_ref, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stem["var"], var_ref, rtol=1e-4, atol=1e-5)
  # Every running statistic was replaced; params untouched.
  assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(variables)
  for path, leaf in flat(out["batch_stats"]).items():
    assert not np.allclose(leaf, flat(variables["batch_stats"])[path]), path


def test_reestimated_soup_beats_first_experts_stats():
  # Four experts share the classifier "bright vs dark" (sign of the normalised channel-0
  # brightness) but each fitted its running mean on its own degradation's brightness.
  # The jpeg expert (first) saw very bright images: its statistics put the threshold
  # near 230, so the 'paper' soup calls everything dark on the mixed test set.
  model = InputBN()
  experts = []
  for k, mean0 in enumerate([0.8, -0.7, 0.1, -0.2]):
    kernel = np.zeros((3, 2), np.float32)
    kernel[0] = [-(1.0 + 0.1 * k), 1.0 + 0.1 * k]
    experts.append(_input_bn_variables(kernel, mean=(mean0, 0.0, 0.0)))

  rng = np.random.default_rng(0)
  brightness = np.concatenate([rng.integers(40, 100, 64), rng.integers(155, 215, 64)])
  labels = (brightness > 127).astype(np.int32)
  images = np.zeros((128, 4, 4, 3), np.uint8)
  images[..., 0] = brightness[:, None, None]
  images[..., 1:] = rng.integers(0, 256, (128, 4, 4, 2))
  perm = rng.permutation(128)
  images, labels = images[perm], labels[perm]

  apply = jax.jit(model.apply)

  def accuracy(v):
    logits, _ = apply(v, normalize(images, "unit"))
    return float(np.mean(np.argmax(logits, -1) == labels))

  paper = uniform_soup(experts, batch_stats="paper")
  reestimated = reestimate_batch_stats(model, uniform_soup(experts), np.split(images, 4),
                                       model_input=UNIT_INPUT)
  assert accuracy(paper) == 0.5
  assert accuracy(uniform_soup(experts, batch_stats="average")) == 1.0
  assert accuracy(reestimated) == 1.0


def test_reestimate_errors_and_no_batchnorm():
  model = InputBN()
  variables = _input_bn_variables()
  with pytest.raises(ValueError, match="empty"):
    reestimate_batch_stats(model, variables, [], model_input=UNIT_INPUT)
  no_bn = {"params": variables["params"]}
  assert reestimate_batch_stats(model, no_bn, [], model_input=UNIT_INPUT) == no_bn


# ---------------------------------------------------------------- plurality vote


def _logits(rows):
  """rows: per expert a [B, C] list -> float32 [N, B, C]."""
  return jnp.asarray(rows, jnp.float32)


def test_majority_wins_even_against_confident_minority():
  # Three experts say class 1 weakly, one says class 2 with a huge logit.
  stack = _logits([[[0, 1, 0]], [[0, 1, 0.5]], [[0, 1, 0]], [[0, 0, 50]]])
  assert ensemble_predict(stack).tolist() == [1]
  assert ensemble_predict(stack, mode="paper_code").tolist() == [1]


def test_two_two_tie_is_broken_by_summed_softmax():
  # Experts 1-2 vote class 0, 3-4 vote class 1; the class-1 voters are more confident.
  stack = _logits([[[2.0, 1.9, 0]], [[2.0, 1.9, 0]], [[0, 5.0, 0]], [[0, 5.0, 0]]])
  probs = np.asarray(jax.nn.softmax(stack, -1)).sum(0)[0]
  assert probs[1] > probs[0]
  assert ensemble_predict(stack).tolist() == [1]


def test_paper_code_tie_break_can_leave_the_tie():
  # 2-2 tie between classes 0 and 1, but class 2 is every expert's close second:
  # summed logits over ALL classes pick 2, which no expert voted for.
  stack = _logits([[[3.0, -5, 2.9]], [[3.0, -5, 2.9]], [[-5, 3.0, 2.9]], [[-5, 3.1, 2.9]]])
  assert ensemble_predict(stack, mode="paper_code").tolist() == [2]
  assert ensemble_predict(stack).tolist() == [1]  # within the tie: class 1 (3.1 > 3.0)


def test_ensemble_is_jittable_and_batched():
  rng = np.random.default_rng(0)
  stack = rng.normal(size=(4, 64, 10)).astype(np.float32)
  predict = jax.jit(ensemble_predict, static_argnames="mode")
  for mode in ("paper_text", "paper_code"):
    got = np.asarray(predict(stack, mode=mode))
    assert got.dtype == np.int32 and got.shape == (64,)
    np.testing.assert_array_equal(got, np.asarray(ensemble_predict(stack, mode=mode)))
  # Numpy reference of the paper's rule, row by row.
  probs = np.exp(stack) / np.exp(stack).sum(-1, keepdims=True)
  for i, label in enumerate(np.asarray(predict(stack))):
    counts = np.bincount(stack[:, i].argmax(-1), minlength=10)
    tied = np.flatnonzero(counts == counts.max())
    assert label == tied[np.argmax(probs[:, i, tied].sum(0))]
  with pytest.raises(ValueError, match="N_experts"):
    ensemble_predict(stack[0])
  with pytest.raises(ValueError, match="mode"):
    ensemble_predict(stack, mode="mean")


def test_the_ensemble_rows_tie_break_is_a_config_switch():
  # Two experts vote 0 and 1 (a tie). Summed softmax over the tied classes (the paper's
  # text, the default) picks 0; the reference code's argmax of the summed logits over
  # all classes picks 2, which no expert voted for (config.ensemble_ties='paper_code').
  from fdjax.config import base_config
  from fdjax.tasks.classification import ClassificationTask

  logits = np.array([[[3.0, 0.0, 2.9]], [[0.5, 3.0, 2.9]]])
  soft = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  text = int(np.argmax(soft.sum(0)[0, :2]))            # among the tied classes 0 and 1
  code = int(np.argmax(logits.sum(0)[0]))
  assert (text, code) == (0, 2)
  config = base_config()
  for ties, expected in (("paper_text", text), ("paper_code", code)):
    config.ensemble_ties = ties
    task = ClassificationTask.from_config(config)
    assert int(np.argmax(task.ensemble(jnp.asarray(logits)), -1)[0]) == expected
