"""The study engine on a tiny digits run: model selection on the held-out split, greedy
soup inside the fused stage, the MoE student with gradient homogenization, the runner's
dependency order, and every method's stage plan."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdjax import methods as methods_lib
from fdjax import pipeline
from fdjax.config_fields import load_config_file
from fdjax.moe import student
from fdjax.study import fingerprint, fused, make_context, stages
from fdjax.study.runner import Runner, Stage, closure
from fdjax.train import init_variables
from fdjax.train.variables_io import load_variables

QUICKSTART = pathlib.Path(__file__).resolve().parents[1] / "configs" / "quickstart.py"


def _tiny_config(**overrides):
  config = load_config_file(f"{QUICKSTART}:tiny")
  config.clean.epochs = 2
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A context with a clean model selected on the validation split."""
  config = _tiny_config(selection="val")
  ctx = make_context(config, str(tmp_path_factory.mktemp("stages")))
  clean = stages.clean_stage(ctx)
  return ctx, clean


def test_selection_on_validation_keeps_the_best_epoch(trained):
  ctx, clean = trained
  record = json.loads((pathlib.Path(ctx.stage_dir("clean")) / "best.json").read_text())
  metrics = [json.loads(l) for l in open(pathlib.Path(ctx.stage_dir("clean")) / "metrics.jsonl")]
  val = {int(m["epoch"]): m["val_accuracy"] for m in metrics if "val_accuracy" in m}
  assert sorted(val) == [1, 2]
  assert record["epoch"] == max(val, key=lambda e: (val[e], -e))
  assert record["val_accuracy"] == max(val.values())
  best = load_variables(str(pathlib.Path(ctx.stage_dir("clean")) / "best"),
                        ctx.template_variables())
  for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(clean)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_greedy_soup_leaves_out_a_harmful_expert(trained, tmp_path, monkeypatch):
  ctx, clean = trained
  ctx.config.fusion.soup = "greedy"
  ctx.workdir = str(tmp_path)
  random_model = init_variables(ctx.model, jax.random.key(42), ctx.dataset.image_shape)
  experts = [clean, random_model, clean, clean]                 # the 'blur' expert is bad
  # The held-out score is replaced by a closed form (closeness to the clean model), so
  # this tests the stage's wiring; greedy_soup itself is tested in test_fusion.py.
  def score(variables):
    return -sum(float(np.sum((np.asarray(a) - np.asarray(b)) ** 2)) for a, b in
                zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(clean["params"])))
  monkeypatch.setattr(fused, "_held_out_score", lambda ctx: score)
  fused.fused_stage(ctx, experts, "average")
  chosen = json.loads((tmp_path / "fused" / "average" / "greedy.json").read_text())["chosen"]
  assert "blur" not in chosen and len(chosen) >= 1
  ctx.config.fusion.soup = "uniform"


def test_shared_parameter_predicate_excludes_stacked_experts():
  assert student.shared_param("stage2_block0/Conv_0/kernel")
  assert student.shared_param("stage3_moe/router/Conv_0/kernel")
  assert not student.shared_param("stage3_moe/experts/block0/Conv_0/kernel")


def _fusiondistill(ctx, clean, experts):
  graph = {"fused/average": Stage("fused/average", (), lambda r: clean),
           **{name: Stage(name, (), lambda r, e=e: e)
              for name, e in zip(stages.expert_names(ctx), experts)},
           **methods_lib.get("fusiondistill").stages(ctx)}
  return Runner(ctx, graph).get("fusiondistill")


@pytest.mark.long   # faster: test_distill (task_losses sum to the loss), test_homogenize
def test_fusiondistill_trains_with_gradient_homogenization(trained, tmp_path, monkeypatch):
  # 'sum' differentiates each degradation's loss on its own and adds the rows: the same
  # training as the plain gradient of the summed loss (closed form), through the stage.
  ctx, clean = trained
  random_model = init_variables(ctx.model, jax.random.key(7), ctx.dataset.image_shape)
  experts = [clean, random_model, clean, random_model]   # teachers that disagree
  results, recipes = {}, []
  ctx.config.selection = "last"     # no validation pass: the test is about the gradients
  try:
    for mode in ("none", "sum", "pcgrad"):
      ctx.workdir = str(tmp_path / mode)
      ctx.config.fusiondistill.homogenize = mode
      if mode == "pcgrad":
        monkeypatch.setattr(methods_lib.fusiondistill, "train_stage",
                            lambda ctx, name, cfg, recipe: recipes.append(recipe))
      results[mode] = _fusiondistill(ctx, clean, experts)
  finally:
    ctx.config.fusiondistill.homogenize, ctx.config.selection = "none", "val"
  for a, b in zip(jax.tree.leaves(results["none"]), jax.tree.leaves(results["sum"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
  # 'pcgrad': the stage's optimiser first projects conflicting task gradients (PCGrad,
  # Yu et al. 2020, Alg. 1; for g1 = (1, 0), g2 = (-1, 1): g1' = (0.5, 0.5),
  # g2' = (0, 1), summed (0.5, 1.5)).
  tx = recipes[0].wrap_tx(optax.sgd(-1.0))           # update = +gradient
  grads = jnp.asarray([[1.0, 0.0], [-1.0, 1.0]])
  update, _ = tx.update(grads, tx.init(jnp.zeros(2)))
  np.testing.assert_allclose(np.asarray(update), [0.5, 1.5], rtol=1e-6)
  assert recipes[0].grad_fn is not None


@pytest.mark.long
def test_moe_student_trains_with_pcgrad_homogenization(trained, tmp_path):
  ctx, clean = trained
  ctx.workdir = str(tmp_path)
  ctx.config.moe.homogenize = "pcgrad"
  graph = {"fused/average": Stage("fused/average", (), lambda r: clean),
           **{name: Stage(name, (), lambda r: clean) for name in stages.expert_names(ctx)},
           **methods_lib.get("fusiondistill_moe").stages(ctx)}
  model, variables = Runner(ctx, graph).get(student.STAGE)
  ctx.config.moe.homogenize = "none"
  assert model.num_experts == 4
  leaves = jax.tree.leaves(variables["params"])
  assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)
  metrics = [json.loads(l) for l in open(tmp_path / "fusiondistill_moe" / "metrics.jsonl")]
  assert metrics and all(np.all(np.isfinite(m["loss"])) for m in metrics if "loss" in m)
  assert "stage3_moe" in variables["params"]


def test_runner_builds_requirements_first_and_once(trained, tmp_path):
  ctx, _ = trained
  built = []

  def node(name, requires=()):
    return Stage(name, requires, lambda r: built.append(name) or name.upper())

  graph = {"a": node("a"), "b": node("b", ("a",)), "c": node("c", ("a", "b"))}
  runner = Runner(ctx, graph)
  assert runner.get("c") == "C" and runner.get("b") == "B" and runner.get("c") == "C"
  assert built == ["a", "b", "c"]  # requirements first, each once
  assert closure(graph, ["c"]) == ["a", "b", "c"]
  assert closure(graph, ["b", "a"]) == ["a", "b"]
  with pytest.raises(ValueError, match="unknown stage"):
    closure(graph, ["d"])
  cyclic = {"x": node("x", ("y",)), "y": node("y", ("x",))}
  with pytest.raises(ValueError, match="stage cycle"):
    closure(cyclic, ["x"])


# Every method alone: the stages its rows need, in build order (the facts the study
# plans its progress from). A method whose requirements miss a stage it uses would
# fail in the runner instead; the end-to-end test runs fusiondistill_moe alone.
EXPECTED_ALONE = {
    "oracle": ["clean", "experts/jpeg", "experts/blur", "experts/awgn", "experts/sapn"],
    "ensemble": ["clean", "experts/jpeg", "experts/blur", "experts/awgn", "experts/sapn"],
    "scratch": ["scratch"],
    "vanilla": ["clean", "vanilla"],
    "modelsoups": ["clean", "experts/jpeg", "experts/blur", "experts/awgn", "experts/sapn",
                   "fused/paper", "fused/average", "fused/reestimate"],
    "fusing": ["clean", "experts/jpeg", "experts/blur", "experts/awgn", "experts/sapn",
               "fused/average", "fusing"],
    "fusiondistill": ["clean", "experts/jpeg", "experts/blur", "experts/awgn", "experts/sapn",
                      "fused/average", "fusiondistill"],
    "fusiondistill_moe": ["clean", "experts/jpeg", "experts/blur", "experts/awgn",
                          "experts/sapn", "fused/average", "fusiondistill_moe"],
    "routed_experts": ["clean", "experts/jpeg", "experts/blur", "experts/awgn",
                       "experts/sapn", "fused/average", "fusiondistill_moe"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_ALONE))
def test_every_method_alone_plans_its_stages(trained, name):
  ctx, _ = trained
  plan = pipeline.planned_stages(ctx, [methods_lib.get(name)])
  assert [stage for stage, _ in plan] == EXPECTED_ALONE[name]
  n = len(ctx.dataset.train)
  for stage, work in plan:
    block = {"experts": "experts", "fused": None}.get(stage.split("/")[0], stage)
    block = "moe" if stage == "fusiondistill_moe" else block
    if block is None:
      assert work == 0
      continue
    shares = 4 if block in ("scratch", "vanilla", "fusing", "fusiondistill", "moe") else 1
    steps = (n * shares) // (shares * ctx.config.batch_size)
    assert work == ctx.config[block].epochs * steps * shares * ctx.config.batch_size


def test_fingerprints_follow_the_config_downstream(trained, tmp_path):
  """A different clean.epochs changes clean's fingerprint and, through it, every stage
  built from it; a different moe block changes the MoE stage only."""
  ctx, _ = trained
  methods = [methods_lib.get("fusiondistill"), methods_lib.get("fusiondistill_moe")]

  def digests():
    runner = Runner(ctx, pipeline.stage_graph(ctx, methods))
    return {n: fingerprint.digest(runner.fields(n)) for n in
            ("clean", "experts/jpeg", "fused/average", "fusiondistill", "fusiondistill_moe",
             "scratch") if n in runner.graph}

  before = digests()
  ctx.config.moe.balance_weight = 1e-3
  after_moe = digests()
  ctx.config.moe.balance_weight = 1e-4
  ctx.config.clean.epochs = 3
  after_clean = digests()
  ctx.config.clean.epochs = 2
  ctx.config.task_balance = "loss"   # the combined-degradation stages only
  after_balance = digests()
  ctx.config.task_balance = "none"
  assert digests() == before            # the default adds nothing to the fingerprints
  assert {n for n in before if before[n] != after_moe[n]} == {"fusiondistill_moe"}
  assert all(before[n] != after_clean[n] for n in before)
  assert {n for n in before if before[n] != after_balance[n]} == {
      "fusiondistill", "fusiondistill_moe"}
  # Recorded on disk by the runner; a changed config then stops before training.
  ctx.workdir = str(tmp_path)
  Runner(ctx, pipeline.stage_graph(ctx, methods)).prepare(["fusiondistill"])
  assert (tmp_path / "clean" / fingerprint.FILE).is_file()
  (tmp_path / "clean" / "metrics.jsonl").write_text("{}\n")   # clean trained (a stage
  ctx.config.clean.optimizer.lr = 1e6                           # that never did may change)
  with pytest.raises(fingerprint.FingerprintMismatchError, match="block.optimizer.lr"):
    Runner(ctx, pipeline.stage_graph(ctx, methods)).prepare(["fusiondistill"])
  ctx.config.clean.optimizer.lr = 0.05


def test_every_trained_stage_has_its_own_training_key():
  """Each stage that trains draws from ``stage_key(seed, name)``; two names with one id
  would train on the same random stream (the id is a weighted character sum)."""
  from fdjax.degradations.registry import REGISTRY
  from fdjax.methods import ea_adam
  from fdjax.moe.student import STAGE
  from fdjax.study.training import stage_key
  names = ["clean", "scratch", "vanilla", "fusing", "fusiondistill", STAGE, ea_adam.NAME,
           ea_adam.FUSION, *(f"experts/{d}" for d in REGISTRY)]
  keys = {tuple(np.asarray(jax.random.key_data(stage_key(0, n))).ravel()) for n in names}
  assert len(keys) == len(names)
