"""EA-Adam's pure pieces against closed forms and hand computations: preference vectors,
normalised gradient combination, SBX and mutation statistics, Tchebycheff and MOEA/D."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from fdjax.population import moead
from fdjax.population.gradients import combine_objective_grads
from fdjax.population.operators import gaussian_mutation, sbx_beta, sbx_crossover
from fdjax.population.preferences import neighbourhoods, pick_partners, preference_vectors


def test_preferences_are_ea_adams_line_for_two_objectives_and_sum_to_one():
  np.testing.assert_allclose(preference_vectors(5, 2),
                             [[1, 0], [.75, .25], [.5, .5], [.25, .75], [0, 1]])
  w = preference_vectors(3, 5)       # clean + 4 degradations
  np.testing.assert_allclose(w.sum(1), 1, rtol=1e-6)
  np.testing.assert_allclose(w[0], [1, 0, 0, 0, 0])
  np.testing.assert_allclose(w[1], [.5, .125, .125, .125, .125])
  np.testing.assert_allclose(w[2], [0, .25, .25, .25, .25])
  with pytest.raises(ValueError):
    preference_vectors(1, 2)


def test_neighbourhoods_on_the_line_and_partners_are_neighbours_or_random():
  nb = neighbourhoods(preference_vectors(5, 2), 3)
  assert nb[:, 0].tolist() == [0, 1, 2, 3, 4]                # itself first
  assert sorted(nb[2].tolist()) == [1, 2, 3] and sorted(nb[0].tolist()) == [0, 1, 2]
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  partners = np.asarray(jax.jit(jax.vmap(lambda k: pick_partners(k, nb, 0.3)))(keys))   # [4000, 5]
  assert not np.any(partners == np.arange(5))                  # never itself
  # member 0: neighbours {1, 2}; 70% from them (35% each) + 30% uniform over the 4 others
  freq = np.bincount(partners[:, 0], minlength=5) / len(keys)
  np.testing.assert_allclose(freq, [0, .35 + .075, .35 + .075, .075, .075], atol=0.025)


def test_neighbours_at_equal_distance_are_taken_by_index():
  # On the line of preferences members i - 1 and i + 1 are equally far from i (their
  # float32 distances differ in the last bits): a neighbourhood of two takes i - 1
  # (member 0: member 1), as the nearest-T rule with ties by index says.
  for count in range(2, 12):
    for objectives in (2, 3, 5):
      nb = neighbourhoods(preference_vectors(count, objectives), 2)
      expected = [[i, max(i - 1, 0) if i else 1] for i in range(count)]
      assert nb.tolist() == expected, (count, objectives)
      three = neighbourhoods(preference_vectors(count, objectives), min(3, count))
      assert all(row[:2] == e for row, e in zip(three.tolist(), expected))


def test_normalised_gradient_combination_equals_a_hand_computation():
  g = {"a": jnp.array([[3.0, 4.0], [0.0, 2.0]]),              # objective rows: norms 5 and 2
       "b": jnp.array([[[1.0, 0.0]], [[0.0, -3.0]]])}          # norms 1 and 3
  w = jnp.array([0.25, 0.75])
  out = combine_objective_grads(g, w, eps=0.0)
  np.testing.assert_allclose(out["a"], [0.25 * 3 / 5, 0.25 * 4 / 5 + 0.75 * 1.0], rtol=1e-6)
  np.testing.assert_allclose(out["b"], [[0.25, -0.75]], rtol=1e-6)


def test_sbx_children_keep_the_parents_mean_and_beta_follows_the_closed_form():
  eta = 20.0
  p1 = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(3.0)}
  p2 = {"w": jnp.array([2.0, 1.0, -0.5]), "b": jnp.array(-1.0)}
  keys = jax.random.split(jax.random.PRNGKey(1), 20000)
  c1, c2 = jax.jit(jax.vmap(lambda k: sbx_crossover(k, p1, p2, eta)))(keys)
  for name in ("w", "b"):
    np.testing.assert_allclose(c1[name] + c2[name], np.broadcast_to(p1[name] + p2[name],
                                                                    c1[name].shape), atol=1e-5)
  # one beta per tensor: (c1 - c2) / (p1 - p2) is the same for every element
  beta_w = np.asarray((c1["w"] - c2["w"]) / (p1["w"] - p2["w"]))
  np.testing.assert_allclose(beta_w, beta_w[:, :1].repeat(3, 1), rtol=1e-4)
  beta = np.asarray((c1["b"] - c2["b"]) / (p1["b"] - p2["b"]))

  def cdf(b):   # closed form: density (eta+1)/2 b^eta on [0,1], (eta+1)/2 b^-(eta+2) above
    b = np.asarray(b, np.float64)
    return np.where(b <= 1, 0.5 * b ** (eta + 1), 1 - 0.5 * b ** -(eta + 1))

  assert stats.kstest(beta, cdf).pvalue > 1e-3
  assert abs(np.mean(beta <= 1) - 0.5) < 0.02
  # E[beta] = (eta+1)/2 (1/(eta+2) + 1/eta)
  np.testing.assert_allclose(beta.mean(), (eta + 1) / 2 * (1 / (eta + 2) + 1 / eta), rtol=5e-3)
  # and sbx_beta at chosen quantiles is the inverse of that CDF
  u = np.array([0.01, 0.25, 0.5, 0.75, 0.99])
  np.testing.assert_allclose(cdf(sbx_beta(jnp.asarray(u), eta)), u, rtol=1e-4)


def test_mutation_touches_two_percent_of_conv_kernels_with_std_003_only():
  # The dense kernel is large enough (4096 elements) that a rule touching it would be
  # seen: about 80 of them at 2 percent.
  params = {"conv": {"kernel": jnp.zeros((3, 3, 32, 64))},
            "dense": {"kernel": jnp.zeros((64, 64))},
            "bn": {"scale": jnp.ones(64), "bias": jnp.zeros(64)}}
  out = jax.jit(lambda k, p: gaussian_mutation(k, p, rate=0.02, std=0.03))(
      jax.random.PRNGKey(2), params)
  delta = np.asarray(out["conv"]["kernel"]).ravel()
  touched = delta != 0
  n = delta.size
  assert abs(touched.mean() - 0.02) < 4 * np.sqrt(0.02 * 0.98 / n)
  assert abs(delta[touched].std() / 0.03 - 1) < 0.06 and abs(delta[touched].mean()) < 0.003
  for path in (("dense", "kernel"), ("bn", "scale"), ("bn", "bias")):
    np.testing.assert_array_equal(out[path[0]][path[1]], params[path[0]][path[1]])


def test_tchebycheff_is_the_normalised_weighted_max_by_hand():
  ideal, nadir = np.array([0.1, 0.2]), np.array([0.5, 0.6])
  # |0.3-0.1|/0.4 = 0.5, |0.5-0.2|/0.4 = 0.75 -> max(0.25*0.5, 0.75*0.75)
  assert moead.tchebycheff([0.3, 0.5], [0.25, 0.75], ideal, nadir) == pytest.approx(0.5625)
  np.testing.assert_allclose(moead.update_ideal([0.3, 0.3], [[0.4, 0.1], [0.2, 0.5]]), [0.2, 0.1])
  np.testing.assert_allclose(moead.nadir_point([[0.4, 0.1], [0.2, 0.5]], [0.9, 0.0]), [0.9, 0.5])


def test_moead_replacement_on_a_constructed_case():
  w = preference_vectors(3, 2)                        # (1,0), (.5,.5), (0,1)
  nb = neighbourhoods(w, 2)                           # 0:[0,1] 1:[1,0] 2:[2,1]
  fitness = np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]])
  children = np.array([[0.1, 0.9],                    # better for slot 0 (objective 1 alone)
                       [0.6, 0.6],                    # dominated by slot 1: replaces nothing
                       [0.3, 0.3]])                   # better for slot 2? 0.3 > 0.2: no; slot 1: yes
  source, new_fitness, ideal, nadir = moead.moead_select(
      fitness, children, w, nb, fitness.min(0), max_replacements=1)
  assert source.tolist() == [3, 5, 2]
  np.testing.assert_allclose(new_fitness, [[0.1, 0.9], [0.3, 0.3], [0.8, 0.2]])
  np.testing.assert_allclose(ideal, [0.1, 0.2])
  np.testing.assert_allclose(nadir, [0.8, 0.9])
  # a frozen slot 0 is never replaced
  source, _, _, _ = moead.moead_select(fitness, children, w, nb, fitness.min(0),
                                       trainable=[False, True, True])
  assert source.tolist() == [0, 5, 2]


def test_moead_normalises_by_a_nadir_that_includes_the_child_and_keeps_ties():
  # One slot (weights .5/.5), member (0.2, 0.2), child (0.1, 0.9). Ideal (0.1, 0.2); the
  # nadir with the child is (0.2, 0.9): g(child) = .5 * 0.7/0.7 = g(member) = .5 * 0.1/0.1,
  # a tie, so the member stays (only a strict improvement replaces). A nadir of the
  # population alone, (0.2, 0.2), spans 0 on objective 2 (counted as 1): g(child) = .35
  # would replace it.
  source, fitness, ideal, nadir = moead.moead_select(
      [[0.2, 0.2]], [[0.1, 0.9]], [[0.5, 0.5]], [[0]], [0.2, 0.2])
  assert source.tolist() == [0]
  np.testing.assert_allclose(fitness, [[0.2, 0.2]])
  np.testing.assert_allclose(ideal, [0.1, 0.2])
  assert moead.tchebycheff([0.1, 0.9], [0.5, 0.5], ideal, [0.2, 0.9]) == moead.tchebycheff(
      [0.2, 0.2], [0.5, 0.5], ideal, [0.2, 0.9]) == 0.5


def test_equal_members_are_both_on_the_front():
  from fdjax.population.pareto import dominates, non_dominated
  # Crossover can breed two members with equal scores: neither dominates the other.
  assert not dominates([0.7, 0.4], [0.7, 0.4])
  assert non_dominated([[0.7, 0.4], [0.2, 0.1], [0.7, 0.4]]) == [0, 2]


def test_pareto_front_and_hypervolume_by_hand():
  from fdjax.population.pareto import hypervolume, non_dominated, pareto_report
  # accuracies (maximised) of 4 members on 2 objectives; member 3 is dominated by member 1
  points = np.array([[0.9, 0.2], [0.6, 0.6], [0.3, 0.8], [0.5, 0.5]])
  assert non_dominated(points) == [0, 1, 2]
  # staircase above (0, 0): 0.9*0.2 + 0.6*(0.6-0.2) + 0.3*(0.8-0.6)
  assert hypervolume(points) == pytest.approx(0.18 + 0.24 + 0.06)
  assert hypervolume(points, ref=[0.5, 0.5]) == pytest.approx(0.1 * 0.1)
  # three objectives: two boxes overlapping in [0,1]x[0,1]x[0,1]
  assert hypervolume([[2, 1, 1], [1, 2, 1]]) == pytest.approx(2 + 2 - 1)
  report = pareto_report(points, ["clean", "jpeg"])
  assert report["members"][1]["values"] == {"clean": 0.6, "jpeg": 0.6}
  assert report["non_dominated"] == [0, 1, 2]


def test_hypervolume_of_any_population_size_counts_the_dominated_cells():
  # Integer points: the hypervolume is the number of unit cells [c, c + 1) that some
  # point's box [ref, p] covers, counted on the grid directly; and inclusion-exclusion
  # over every subset (the closed form) where that is small enough to enumerate.
  import itertools

  from fdjax.population.pareto import hypervolume

  rng = np.random.default_rng(0)
  for count, objectives in ((5, 2), (9, 3), (24, 2), (20, 3), (6, 5)):
    points = rng.integers(0, 7, (count, objectives)).astype(float)
    ref = np.full(objectives, 1.0)
    cells = np.stack(np.meshgrid(*[np.arange(1, 7)] * objectives, indexing="ij"), -1)
    covered = (cells[..., None, :] + 1 <= points).all(-1).any(-1)
    assert hypervolume(points, ref) == covered.sum(), (count, objectives)
    if count <= 9:
      closed = sum((-1) ** (len(s) + 1) * np.prod(np.clip(points[list(s)].min(0) - ref, 0, None))
                   for r in range(1, count + 1) for s in itertools.combinations(range(count), r))
      assert hypervolume(points, ref) == pytest.approx(closed)


def test_the_fitness_size_note_is_said_once_not_per_stage(caplog):
  """quickstart:population asks for 200 fitness images of a 143-image validation split:
  the note came twice a seed (ea_adam and ea_adam/merged)."""
  import logging
  import types

  from fdjax.data import ImageSet
  from fdjax.population import fitness

  split = ImageSet(np.zeros((7, 4, 4, 3), np.uint8), np.zeros(7, np.int32))
  ctx = types.SimpleNamespace(dataset=types.SimpleNamespace(validation=split))
  with caplog.at_level(logging.INFO):
    for _ in range(3):
      assert len(fitness.validation_subset(ctx, 1009)) == 7
  assert sum("is more than the 7 validation images" in r.getMessage()
             for r in caplog.records) == 1


def test_make_offspring_crosses_each_member_with_a_partner_and_mutates_when_asked():
  # Members' kernels are distinct constant-free random arrays. crossover 1, mutation 0:
  # each child is SBX's FIRST child of its member and some other member (child - p_i =
  # 0.5 (1 - beta) (p_j - p_i) with beta near 1 at eta 20: close to its own member, not to
  # the partner). Both off: the parents. Mutation of every element: all kernels move.
  from fdjax.population.evolution import EvolutionConfig, make_offspring

  count = 6
  params = {"conv": {"kernel": jnp.asarray(np.random.default_rng(0).normal(
      size=(count, 3, 3, 2, 4)), jnp.float32)}}
  neighbours = neighbourhoods(preference_vectors(count, 2), 3)
  key = jax.random.key(2)
  same = make_offspring(key, params, neighbours,
                        EvolutionConfig(crossover_prob=0.0, mutation_prob=0.0))
  np.testing.assert_array_equal(same["conv"]["kernel"], params["conv"]["kernel"])
  crossed = np.asarray(make_offspring(key, params, neighbours, EvolutionConfig(
      crossover_prob=1.0, mutation_prob=0.0, random_partner_prob=0.0))["conv"]["kernel"])
  p = np.asarray(params["conv"]["kernel"])
  for i in range(count):
    assert not np.array_equal(crossed[i], p[i])
    step = (crossed[i] - p[i]).ravel()
    slopes = []
    for j in neighbours[i][1:]:   # the partner: step = slope (p_j - p_i), exactly
      d = (p[j] - p[i]).ravel()
      slope = float(d @ step / (d @ d))
      if np.allclose(step, slope * d, atol=1e-5):
        slopes.append(slope)
    assert slopes and min(abs(x) for x in slopes) < 0.25, (i, slopes)
  mutated = np.asarray(make_offspring(key, params, neighbours, EvolutionConfig(
      crossover_prob=0.0, mutation_prob=1.0, mutation_rate=1.0, mutation_std=0.1)
      )["conv"]["kernel"])
  assert np.all(mutated != p)
  np.testing.assert_allclose((mutated - p).std(), 0.1, rtol=0.15)


def test_evolve_scores_children_with_their_parents_statistics_and_keeps_its_counts():
  # Two generations by hand-checkable rules: the offspring are scored with the parents'
  # BatchNorm statistics; the ideal point is the minimum of every fitness seen (parents
  # and children); a member's replacement count adds up over generations.
  from fdjax.population.evolution import EvolutionConfig, evolve, init_evolution

  count, m = 4, 2
  rng = np.random.default_rng(0)
  population = {"params": {"conv": {"kernel": jnp.asarray(rng.normal(size=(count, 3, 3, 1, 2)),
                                                          jnp.float32)}},
                "batch_stats": {"bn": {"mean": jnp.asarray(rng.normal(size=(count, 2)),
                                                           jnp.float32)}}}
  seen = []

  def score(offspring):   # objective values to minimise, from each child's kernel
    seen.append(offspring)
    k = np.asarray(offspring["params"]["conv"]["kernel"], np.float64).reshape(count, -1)
    return np.stack([k.mean(1), -k.mean(1) + np.abs(k).mean(1)], axis=1)

  fitness = score(population)
  seen.clear()
  state = init_evolution(jax.random.PRNGKey(0), preference_vectors(count, m),
                         np.ones(count, bool))
  cfg = EvolutionConfig(neighbours=3, crossover_prob=1.0, mutation_prob=1.0, mutation_rate=0.5)
  changes = np.zeros(count, int)
  lowest = fitness.min(0)
  for generation, key in enumerate(jax.random.split(jax.random.key(1), 2)):
    before = np.asarray(population["params"]["conv"]["kernel"])
    parents_stats = np.asarray(population["batch_stats"]["bn"]["mean"])
    population, state = evolve(key, population, fitness, state, score, cfg)
    offspring = seen[-1]
    np.testing.assert_array_equal(offspring["batch_stats"]["bn"]["mean"], parents_stats)
    lowest = np.minimum(lowest, score(offspring).min(0))
    np.testing.assert_allclose(state.ideal, lowest, rtol=1e-6)
    after = np.asarray(population["params"]["conv"]["kernel"])
    changes += np.any((after != before).reshape(count, -1), axis=1)
    np.testing.assert_array_equal(state.replaced, changes)
    assert int(state.generation) == generation + 1
    fitness = np.asarray(state.fitness, np.float64)
  assert changes.sum() > 0
