"""The evolutionary epoch inside the engine's loop: it replaces members but never the
frozen one, and a run that crashes after an evolutionary epoch resumes exactly
(population, preferences, ideal/nadir points and the evolution's key all come back
from the checkpoint, and evolution is a function of that key)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fdjax.data import ImageSet
from fdjax.population.evolution import EvolutionConfig, init_evolution
from fdjax.population.gradients import freeze_members, population_grad_fn
from fdjax.population.hook import evolution_hook
from fdjax.population.objectives import share_losses
from fdjax.population.preferences import preference_vectors
from fdjax.population.state import create_population_state, stack_members
from fdjax.tasks.classification import NO_AUGMENT, ClassificationTask
from fdjax.train import LoopConfig, fit, make_mesh, make_train_step

from test_population_step import TinyNet

P, M = 3, 2
# mutate and cross over every time, so that every epoch changes something
EVOLUTION = EvolutionConfig(neighbours=2, crossover_prob=1.0, mutation_prob=1.0, mutation_rate=0.5)


def _score(stacked):
  """Deterministic objective values [P, 2] (to minimise) from each member's conv kernel."""
  kernel = np.asarray(stacked["params"]["Conv_0"]["kernel"]).reshape(P, -1)
  return np.stack([kernel.mean(1), -kernel.mean(1) + 0.1 * np.abs(kernel).mean(1)], axis=1)


def _members():
  model = TinyNet()
  init = jax.jit(lambda key: model.init(key, jnp.zeros((1, 8, 8, 3)), train=False))
  return model, stack_members([init(jax.random.PRNGKey(i)) for i in range(P)])


def _fit(tmp_path, setup, max_steps=0):
  population, tx, step, mesh = setup
  preferences, trainable = preference_vectors(P, M), np.array([False, True, True])
  evolution = init_evolution(jax.random.PRNGKey(9), preferences, trainable)
  population = jax.tree.map(jnp.copy, population)   # the step donates the state's buffers
  state = create_population_state(population, tx, jax.random.PRNGKey(1), evolution, mesh)
  rng = np.random.default_rng(0)
  split = ImageSet(rng.integers(0, 256, (16, 8, 8, 3)).astype(np.uint8),
                   rng.integers(0, 3, 16).astype(np.int32))
  hook = evolution_hook(_score, EVOLUTION, ("a", "b"), higher_is_better=False,
                        report_path=str(tmp_path / "pareto.json"))
  return fit(state, step, split, loop=LoopConfig(epochs=2, batch_size=8, log_every_steps=100,
                                                 checkpoint_every_steps=100, max_steps=max_steps),
             mesh=mesh, workdir=str(tmp_path), name="population", on_epoch_end=hook)


def test_a_crash_after_an_evolutionary_epoch_resumes_exactly(tmp_path):
  model, population = _members()
  mesh = make_mesh()
  trainable = np.array([False, True, True])
  tx = optax.chain(optax.adam(1e-2), freeze_members(trainable))
  step = make_train_step(share_losses(model, ClassificationTask("unit", NO_AUGMENT),
                                      lambda k, x: x, M), tx, mesh,
                         grad_fn=population_grad_fn(preference_vectors(P, M), trainable=trainable))
  setup = (population, tx, step, mesh)      # one compiled step for the three runs
  straight = _fit(tmp_path / "straight", setup)
  assert int(straight.evolution.generation) == 2
  assert int(np.sum(straight.evolution.replaced)) > 0            # evolution replaced members
  for got, want in zip(jax.tree.leaves(jax.tree.map(lambda x: x[0], straight.variables)),
                       jax.tree.leaves(jax.tree.map(lambda x: x[0], population))):
    np.testing.assert_array_equal(got, want)      # frozen member 0: never trained nor replaced
  _fit(tmp_path / "crashed", setup, max_steps=3)   # evolved after step 2, stopped at step 3
  resumed = _fit(tmp_path / "crashed", setup)
  assert int(resumed.step) == 4
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(straight)[0],
                          jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
  assert (tmp_path / "crashed" / "pareto.json").exists()


def test_evolve_every_and_generations_as_the_official_schedule():
  # The official code evolves after every 10th Adam epoch, 200 generations at a time:
  # `evolve_every` Adam epochs pass untouched, then `generations` generations run, each
  # on the members and fitness the last left: the same as that many one-generation
  # epochs, each scoring its members afresh.
  from fdjax.population.evolution import evolutionary_epoch

  _, population = _members()
  evolution = init_evolution(jax.random.PRNGKey(9), preference_vectors(P, M),
                             np.array([False, True, True]))
  state = create_population_state(population, optax.adam(1e-2), jax.random.PRNGKey(1),
                                  evolution, make_mesh())
  hook = evolution_hook(_score, EVOLUTION, ("a", "b"), higher_is_better=False, evolve_every=2,
                        generations=3)
  assert hook(state, 0) == {}   # no new state: the loop keeps (and need not save) its own
  evolved, metrics = hook(state, 1)
  assert int(evolved.evolution.generation) == 3 and len(metrics["member_metric"]) == P
  expected = state
  for _ in range(3):
    expected, _ = evolutionary_epoch(expected, _score, EVOLUTION)
  assert int(np.sum(expected.evolution.replaced)) > 0
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(expected)[0],
                          jax.tree.leaves(evolved)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_the_hook_reports_member_metrics_in_the_metric_s_direction():
  # Fitness is minimised; the member metric (the logged values, the Pareto report) is the
  # metric itself: -fitness for a metric where higher is better, fitness otherwise.
  _, population = _members()
  mesh = make_mesh()
  tx = optax.adam(1e-2)
  preferences, trainable = preference_vectors(P, M), np.array([False, True, True])
  evolution = init_evolution(jax.random.PRNGKey(9), preferences, trainable)
  outputs = {}
  for higher in (True, False):
    state = create_population_state(jax.tree.map(jnp.copy, population), tx,
                                    jax.random.PRNGKey(1), evolution, mesh)
    hook = evolution_hook(_score, EVOLUTION, ("a", "b"), higher_is_better=higher)
    new_state, metrics = hook(state, 0)
    outputs[higher] = np.asarray(metrics["member_metric"])
    fitness = np.asarray(new_state.evolution.fitness, np.float64)
    np.testing.assert_allclose(outputs[higher], -fitness if higher else fitness, rtol=1e-6)
  np.testing.assert_allclose(outputs[True], -outputs[False], rtol=1e-6)
