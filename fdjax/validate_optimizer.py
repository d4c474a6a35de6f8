"""The optimiser fields of a training stage's block (``<stage>.optimizer``), checked for
``fdjax.validate.validate_config``: name, schedule, learning rate, momentum and betas,
decays, clipping, warm-up and milestones (a field the optimiser or schedule does not
read keeps its default); EA-Adam's population (block ``ea_adam``) takes
no parameter average and no global-norm clipping."""

from __future__ import annotations

from fdjax.validate_values import MISSING, distinct, get, is_finite_real, is_int, is_real


def check_optimizer(config, stage: str, check) -> None:
  """Checks block ``stage``'s optimiser fields with ``check(field, ok, rule)``
  (``fdjax.validate.validate_config``'s)."""
  from fdjax.config import DEFAULT_BETA2, DEFAULT_DECAY
  from fdjax.train.optim import OPTIMIZERS, SCHEDULES

  opt = f"{stage}.optimizer"
  check(f"{opt}.name", lambda v: v in OPTIMIZERS, f"one of {OPTIMIZERS}")
  check(f"{opt}.schedule", lambda v: v in SCHEDULES, f"one of {SCHEDULES}")
  check(f"{opt}.lr", lambda v: is_finite_real(v) and v > 0, "finite and > 0")
  name = get(config, f"{opt}.name")
  sgd = name == "sgd"
  check(f"{opt}.momentum", (lambda v: is_real(v) and 0 <= v <= 1) if sgd else
        (lambda v: is_real(v) and 0 <= v < 1),
        "in [0, 1]" if sgd else f"in [0, 1) ({name}'s first-moment decay, betas[0])")
  # Fields the optimiser or schedule does not read: a changed value would do nothing
  # (and, being in the stage's fingerprint, retrain it for nothing).
  if sgd:
    check(f"{opt}.beta2", lambda v: v == DEFAULT_BETA2,
          f"{DEFAULT_BETA2} (the default) with sgd, which has no second moment")
  # RAdam's rectification term (optax, float32) cancels badly above 0.999: at 0.9999 it
  # switches on at step 2 where PyTorch's (float64) does at step 6.
  radam = name == "radam"
  if not sgd:
    check(f"{opt}.beta2", (lambda v: is_real(v) and 0 <= v <= 0.999) if radam else
          (lambda v: is_real(v) and 0 <= v < 1),
          "in [0, 0.999] for radam (its rectification is float32)" if radam else "in [0, 1)")
  # EA-Adam's evolutionary epochs replace members' parameters, which an average of the
  # parameters before them would not follow.
  check(f"{opt}.ema_decay", (lambda v: v == 0) if stage == "ea_adam" else
        (lambda v: is_real(v) and 0 <= v < 1),
        "0 (the evolutionary epochs replace members' parameters)" if stage == "ea_adam"
        else "in [0, 1) (0: no parameter average)")
  check(f"{opt}.weight_decay", lambda v: is_finite_real(v) and v >= 0,
        "finite and >= 0")
  if get(config, f"{opt}.schedule") in ("multistep", MISSING):
    check(f"{opt}.decay", lambda v: is_finite_real(v) and v > 0, "finite and > 0")
  else:
    check(f"{opt}.decay", lambda v: v == DEFAULT_DECAY,
          f"{DEFAULT_DECAY} (the default) with schedule "
          f"{get(config, f'{opt}.schedule')!r} (decay is multistep's factor per milestone)")
  # One global norm over EA-Adam's stacked members would let one member's large gradient
  # shrink the others' steps: the members train independently.
  check(f"{opt}.clip_norm", (lambda v: v == 0) if stage == "ea_adam" else
        (lambda v: is_finite_real(v) and v >= 0),
        "0 (one global norm would couple the population's members)" if stage == "ea_adam"
        else "finite and >= 0 (0: no clipping)")
  epochs = get(config, f"{stage}.epochs")
  check(f"{opt}.warmup_epochs",
        lambda v: is_real(v) and v >= 0 and (not (is_int(epochs) and epochs >= 1)
                                              or v < epochs),
        f"a number of epochs >= 0 and below {stage}.epochs={epochs}")
  if get(config, f"{opt}.schedule") not in ("multistep", MISSING):   # else ignored
    check(f"{opt}.milestones", lambda v: not v,
          f"empty with schedule {get(config, f'{opt}.schedule')!r} (milestones are "
          f"multistep's: add --config.{opt}.milestones='()')")
  if get(config, f"{opt}.schedule") == "multistep" and is_int(epochs) and epochs >= 1:
    check(f"{opt}.milestones",
          lambda v: all(is_int(m) and 1 <= m <= epochs for m in v) and distinct(list(v)),
          f"epochs in 1..{stage}.epochs={epochs}, none repeated (a repeat decays once)")
