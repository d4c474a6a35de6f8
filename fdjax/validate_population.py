"""Config checks of EA-Adam's blocks (``fdjax.validate`` calls ``check_population``).

Every field is checked when its block is present (the defaults are valid), as the
other blocks are; the cross-field rules below apply when ``config.methods`` includes
'ea_adam' or 'ea_adam_fusion'. Each problem is one ``"<field> must be <rule>, got
<value>"`` line for ``validate_config``'s ``ConfigError``.

``ea_adam`` (``fdjax.population``; one preference vector per member over the objectives
of its family):

* ``objectives``: 'degradations' (clean images + each degradation) or 'perception' (L1
  and RaGAN: needs ``task='restoration'``, whose outputs are images);
  ``critic_width``, ``critic_depth`` (the per-member discriminators): integers >= 1,
  ``critic_lr``: finite and > 0; ``perception_fitness``: 'gradient_w1' or 'niqe'
  ('niqe': the tiles, ``data.tile`` or twice ``restoration.patch``, must hold two
  96x96 blocks after ``restoration.shave``);
* ``size`` (P): an integer >= 2 (the preference vectors span P points);
* ``neighbours`` (T, the member itself included): an integer in 2..size (a crossover
  partner is drawn among the T-1 others);
* ``max_replacements``: an integer in 1..neighbours;
* ``random_partner_prob``, ``crossover_prob``, ``mutation_prob``, ``mutation_rate``:
  probabilities in [0, 1]; ``eta`` (SBX distribution index): finite and > 0;
  ``mutation_std``: finite and >= 0;
* ``fitness_examples``: an integer >= 0 (0: the whole validation split; more than the
  split holds is clamped to it, with a log line: ``fdjax.population.fitness``);
* ``freeze_first``: True or False; ``member_loop``: 'auto', 'vmap' or 'unroll'.

``ea_adam_fusion``: ``width`` (the mixing predictor's channels) and
``calibration_batches`` (validation batches the baked mixing weights average over):
integers >= 1. ``epochs`` and ``optimizer`` of both blocks are checked with the other
training stages (``fdjax.config.TRAINING_STAGES``).

With either method: ``data.validation_fraction`` > 0 (the members' fitness, the merge
weights and the fusion network's calibration are measured on the validation split).
With 'ea_adam_fusion': the task's model has only layers the fusion network can mix
(Conv, Dense, BatchNorm: ``fdjax.population.fusion_net``), e.g. the restoration 'unet'
and the ResNet, not 'nafnet', 'promptir' or 'measnet'.
"""

from __future__ import annotations

from typing import Any, Callable

from fdjax.config import parse_list
from fdjax.validate_values import is_finite_real, is_int

METHODS = ("ea_adam", "ea_adam_fusion")
FAMILIES = ("degradations", "perception")   # fdjax.population.families
PERCEPTION_FITNESS = ("gradient_w1", "niqe")  # fdjax.population.perception_fitness
MEMBER_LOOPS = ("auto", "vmap", "unroll")   # fdjax.population.gradients
PROBABILITIES = ("random_partner_prob", "crossover_prob", "mutation_prob", "mutation_rate")


def check_population(config, check: Callable[[str, Callable[[Any], bool], str], None],
                     problems: list[str]) -> None:
  """Appends the problems of ``config.ea_adam`` / ``config.ea_adam_fusion`` through
  ``check(field, ok, rule)`` (``fdjax.validate``'s: skips absent fields) and
  ``problems`` (module docstring)."""
  block = config.get("ea_adam")
  if block is not None:
    _check_ea_adam(block, check)
    _check_niqe_tiles(config, problems)
  check("ea_adam_fusion.width", lambda v: is_int(v) and v >= 1, "an integer >= 1")
  check("ea_adam_fusion.calibration_batches", lambda v: is_int(v) and v >= 1,
        "an integer >= 1")
  chosen = [m for m in parse_list(config.get("methods", "")) if m in METHODS]
  fraction = config.get("data", {}).get("validation_fraction")
  if chosen and is_finite_real(fraction) and fraction == 0:
    problems.append(f"data.validation_fraction must be > 0 with method(s) {','.join(chosen)} "
                    f"(EA-Adam's fitness, merge weights and calibration use the validation "
                    f"split), got {fraction!r}")
  if "ea_adam_fusion" in chosen and not problems:
    _check_fusion_model(config, problems)


def _check_fusion_model(config, problems: list[str]) -> None:
  """The fusion network mixes the members' Conv, Dense and BatchNorm layers only: the
  task's model is traced once through it on a 32x32 input (shapes only, nothing runs).
  A model that cannot be built is left to the task's checks (``fdjax.validate_task``)."""
  import jax
  import jax.numpy as jnp

  from fdjax import tasks
  from fdjax.population.fusion_net import dynamic_apply
  from fdjax.population.model import StackedModel

  try:
    model = tasks.from_config(config).build_model(config, tasks.DataSpec((32, 32, 3), 10))
  except (ValueError, TypeError, KeyError, AttributeError):
    return
  x = jnp.zeros((1, 32, 32, 3), jnp.float32)
  alpha = jnp.full((1, 2), 0.5, jnp.float32)
  try:
    stacked = jax.eval_shape(lambda: StackedModel(model, 2).init(jax.random.key(0), x))
    jax.eval_shape(lambda members: dynamic_apply(model, members, alpha, x), stacked)
  except (ValueError, TypeError) as e:   # a model field the task's rules let through
    problems.append(f"the EA-Adam fusion network cannot be built from this model: {e}")
  except NotImplementedError as e:
    what = (f"restoration.model={config.restoration.get('model')!r}"
            if config.get("task") == "restoration" else f"task {config.get('task')!r}")
    problems.append(f"methods must not include 'ea_adam_fusion' with {what}: {e}")


def _check_niqe_tiles(config, problems: list[str]) -> None:
  """NIQE fitness needs validation tiles (``data.tile``, 0: twice ``restoration.patch``)
  with two whole 96x96 blocks after the ``restoration.shave`` crop."""
  if config.ea_adam.get("perception_fitness") != "niqe":
    return
  from fdjax.tasks.restoration_niqe import has_blocks
  data, o = config.get("data", {}), config.get("restoration", {})
  tile, patch, shave = data.get("tile", 0), o.get("patch", 64), o.get("shave", 0)
  if not all(is_int(v) for v in (tile, patch, shave)):
    return  # left to the data and task checks
  side = tile or 2 * patch
  if not has_blocks(side, side, shave):
    problems.append(f"ea_adam.perception_fitness='niqe' needs validation tiles with two "
                    f"96x96 blocks after restoration.shave={shave}: data.tile >= "
                    f"{192 + 2 * shave}, got {side}x{side} tiles")


def _check_ea_adam(block, check) -> None:
  size, neighbours = block.get("size"), block.get("neighbours")
  check("ea_adam.objectives", lambda v: v in FAMILIES, f"one of {FAMILIES}")
  if block.get("objectives") == "perception":
    check("task", lambda v: v == "restoration",
          "'restoration' for ea_adam.objectives='perception' (its objectives score images)")
  for name in ("critic_width", "critic_depth", "evolve_every", "generations"):
    check(f"ea_adam.{name}", lambda v: is_int(v) and v >= 1, "an integer >= 1")
  epochs = block.get("epochs")
  if is_int(epochs) and epochs >= 1:   # more would leave the row plain Adam
    check("ea_adam.evolve_every", lambda v: not is_int(v) or v <= epochs,
          f"at most ea_adam.epochs={epochs} (else no evolutionary epoch ever runs)")
  check("ea_adam.perception_fitness", lambda v: v in PERCEPTION_FITNESS,
        f"one of {PERCEPTION_FITNESS}")
  check("ea_adam.critic_lr", lambda v: is_finite_real(v) and v > 0, "a finite number > 0")
  check("ea_adam.size", lambda v: is_int(v) and v >= 2, "an integer >= 2")
  if is_int(size) and size >= 2:
    check("ea_adam.neighbours", lambda v: is_int(v) and 2 <= v <= size,
          f"an integer in 2..ea_adam.size={size} (the member and at least one partner)")
  else:
    check("ea_adam.neighbours", lambda v: is_int(v) and v >= 2, "an integer >= 2")
  if is_int(neighbours) and neighbours >= 1:
    check("ea_adam.max_replacements", lambda v: is_int(v) and 1 <= v <= neighbours,
          f"an integer in 1..ea_adam.neighbours={neighbours}")
  else:
    check("ea_adam.max_replacements", lambda v: is_int(v) and v >= 1, "an integer >= 1")
  for name in PROBABILITIES:
    check(f"ea_adam.{name}", lambda v: is_finite_real(v) and 0 <= v <= 1, "a probability in [0, 1]")
  check("ea_adam.eta", lambda v: is_finite_real(v) and v > 0, "a finite number > 0")
  check("ea_adam.mutation_std", lambda v: is_finite_real(v) and v >= 0, "a finite number >= 0")
  check("ea_adam.fitness_examples", lambda v: is_int(v) and v >= 0,
        "an integer >= 0 (0: the whole validation split)")
  check("ea_adam.freeze_first", lambda v: isinstance(v, bool), "True or False")
  check("ea_adam.member_loop", lambda v: v in MEMBER_LOOPS, f"one of {MEMBER_LOOPS}")
