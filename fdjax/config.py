"""The one config schema. Every file in ``configs/`` starts from ``base_config()`` (the
restoration ones from ``fdjax.config_restoration.restoration_config()``, which builds on
it) and changes a few fields; ``--config.<field>=value`` overrides any of them, and an
unknown field fails (the config is locked by ``fdjax.main``).
"""

from __future__ import annotations

from typing import Sequence

import ml_collections

# What `config.methods` holds by default: the paper's table (every method, its rows and
# the stages it needs: `fdjax.methods`).
PAPER_METHODS = ("oracle", "ensemble", "scratch", "vanilla", "modelsoups", "fusing",
                 "fusiondistill")
# Degradations whose level range `config.levels.<name>` may restrict (the registry's).
LEVEL_NAMES = ("jpeg", "blur", "awgn", "sapn", "sapn_paper", "denoise", "haze", "rain",
               "lowlight", "motion_blur", "sr")
# The training stages, each a `stage_config` (epochs, optimizer) in `base_config()`.
TRAINING_STAGES = ("clean", "experts", "fusiondistill", "fusing", "vanilla", "scratch", "moe",
                   "ea_adam", "ea_adam_fusion")
# The stages whose loss weights the shares of a combined batch (``task_balance``, and their
# block's own); the experts and EA-Adam's blocks train one objective per loss term.
BALANCED_STAGES = ("clean", "scratch", "vanilla", "fusing", "fusiondistill", "moe")


def parse_list(text) -> list[str]:
  """``'a, b,,c'`` -> ``['a', 'b', 'c']``: the one reading of a comma-separated field."""
  return [t.strip() for t in str(text).split(",") if t.strip()]


def parse_ints(text, field: str) -> list[int]:
  """Comma-separated integers of config field ``field``; ValueError naming it otherwise."""
  try:
    return [int(t) for t in parse_list(text)]
  except ValueError as e:
    raise ValueError(f"config.{field} must be comma-separated integers, got {text!r}") from e


# Where FusionDistill's paper and its official code differ, fdjax's defaults follow the
# paper's text: salt noise at 255 (the code writes 1), Ensemble ties broken by the summed
# softmax over the tied classes (the code: summed logits over all classes), the fused
# model's BatchNorm statistics averaged (the code keeps the first expert's). These
# overrides run as the code does. (The code's combined steps also hold the same images in
# every share, its loaders seeded alike; fdjax's shares draw their own:
# ``fdjax.data.share_pools``.)
PAPER_CODE = ("--config.degradations=jpeg,blur,awgn,sapn_paper",
              "--config.ensemble_ties=paper_code", "--config.fusion.init_batch_stats=paper")
DEFAULT_BETA2 = 0.999   # Adam's / RAdam's second-moment decay: PyTorch's betas[1]
DEFAULT_DECAY = 0.2     # multistep's factor at each milestone
ILIAC_COS_WEIGHT = 1.0  # experts.cos_weight: ILIAC's feature term, read with loss='iliac'


def optimizer_config(name: str = "sgd", lr: float = 0.1, *, momentum: float = 0.9,
                     weight_decay: float = 1e-4, schedule: str = "multistep",
                     milestones: tuple[int, ...] = (), decay: float = DEFAULT_DECAY,
                     beta2: float = DEFAULT_BETA2, warmup_epochs: float = 0.0,
                     clip_norm: float = 0.0,
                     ema_decay: float = 0.0) -> ml_collections.ConfigDict:
  """Optimiser and schedule of one stage (see ``fdjax.train.optim``). ``momentum``:
  SGD's momentum, and Adam's, AdamW's and RAdam's first-moment decay (``betas[0]``).
  ``beta2``: the decay of their second-moment average (PyTorch's default 0.999; SGD has
  none: leave it at 0.999). ``decay``: the rate's factor at each ``multistep``
  milestone (other schedules have none: leave it at 0.2). ``warmup_epochs``: a linear warm-up of the rate over that many
  epochs (may be fractional) before the schedule; ``clip_norm``: the gradients' global
  norm is clipped to it (0: neither). ``ema_decay`` > 0: the stage evaluates, selects
  and saves an exponential moving average of its parameters with that decay instead of
  the parameters themselves (``fdjax.train.ema``; 0, the default, keeps none)."""
  return ml_collections.ConfigDict(dict(name=name, lr=lr, momentum=momentum,
                                        weight_decay=weight_decay, schedule=schedule,
                                        milestones=tuple(milestones), decay=decay,
                                        beta2=beta2, warmup_epochs=warmup_epochs,
                                        clip_norm=clip_norm, ema_decay=ema_decay))


def stage_config(epochs: int, optimizer: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A training stage's block: ``epochs``, ``optimizer`` and ``task_balance`` ('' = the
  config's ``task_balance``; 'none' or 'loss' overrides it for this stage alone)."""
  return ml_collections.ConfigDict(dict(epochs=epochs, optimizer=optimizer, task_balance=""))


def fusiondistill_config(epochs: int, optimizer: ml_collections.ConfigDict, *,
                         alpha: float = 0.1, gamma: float = 1.0,
                         output_weight: float = 0.0) -> ml_collections.ConfigDict:
  """A distilling stage's block (FusionDistill's, and the MoE student's under its own
  options): a stage block plus the loss weights of ``fusiondistill_loss``, ``alpha *
  task loss + gamma * sum_i (1 - cos_i) + output_weight * mean_i d(outputs, expert_i's)``
  (gamma the same for every expert, as in the paper; ``output_weight`` > 0 adds
  response distillation: the task's pixel loss between images (L1, or Charbonnier by
  ``restoration.loss``), KL between softmaxes; 0 = the paper's
  loss)."""
  block = stage_config(epochs, optimizer)
  # homogenize: how the per-share gradients combine ('none': the gradient of the summed
  # loss; 'sum' | 'pcgrad' | 'meta': MUIRF-style gradient homogenization, fdjax.moe).
  block.update(alpha=alpha, gamma=gamma, output_weight=output_weight, homogenize="none")
  return block


def set_epochs(config: ml_collections.ConfigDict, **per_stage: int) -> ml_collections.ConfigDict:
  """Sets ``config.<stage>.epochs`` in place, e.g. ``set_epochs(config, clean=16,
  experts=4)``; returns ``config``."""
  for stage, count in per_stage.items():
    config[stage].epochs = count
  return config


def config_variants(arg: str | None, known: Sequence[str], config_name: str, *,
                    combine: bool = False) -> set[str]:
  """The variants that ``--config=configs/<config_name>.py:<arg>`` names: the empty set
  for no ``arg``, else ``{arg}`` (with ``combine``: ``arg`` split at commas, e.g.
  ``'tiny,bf16'``). ``ValueError`` listing ``known`` for any other name, so that a
  misspelt variant never runs the full config instead."""
  names = set() if not arg else set(parse_list(arg)) if combine else {arg}
  unknown = sorted(names - set(known))
  if unknown:
    options = ", ".join(f":{k}" for k in known)
    how = (" (comma-separated, e.g. :" + ",".join(known[:2]) + ")" if combine
           else " (one at a time: this config's variants do not combine)"
           if "," in arg else "")
    raise ValueError(f"unknown {config_name} variant(s) {unknown}; use {options}{how} "
                     f"or nothing")
  return names


def apply_runlocal(config: ml_collections.ConfigDict, *, max_per_split: int,
                  depth: int | None = 8, stages: Sequence[str] = ("clean",),
                  clear_milestones: bool = False) -> ml_collections.ConfigDict:
  """Shrinks ``config`` in place for a smoke run (the configs' ``:runlocal`` variants):
  every split truncated to ``max_per_split`` examples, model depth ``depth`` (None keeps
  it), one epoch for each of ``stages`` (with no learning-rate milestones when
  ``clear_milestones``). Returns ``config``."""
  config.data.max_per_split = max_per_split
  if depth is not None:
    config.model.depth = depth
  for stage in stages:
    config[stage].epochs = 1
    if clear_milestones:
      config[stage].optimizer.milestones = ()
  return config


def base_config() -> ml_collections.ConfigDict:
  """Defaults: the paper's CIFAR-10 ResNet-56 recipe for the clean stage."""
  c = ml_collections.ConfigDict()
  c.task = "classification"         # fdjax.tasks.TASKS
  c.seed = 0                        # unused (old runs' config.json); see `seeds`
  c.data = ml_collections.ConfigDict(dict(
      source="tfds:cifar10",       # tfds:<name> | folder:<path or .tar.gz> | digits[:<size>]
      validation_fraction=0.1,     # held out from train for model selection ('val', greedy
                                   # soup); the paper configs set 0: the reference trains on all
      max_per_split=0,             # > 0 truncates every split (tests, smoke runs)
      normalization="cifar10",     # key of fdjax.models.CHANNEL_STATS
      cache_dir="",                # '' = default (~/.cache/fdjax or $FDJAX_CACHE)
      data_dir="",                 # TFDS data dir; '' = TFDS default
  ))
  c.model = ml_collections.ConfigDict(dict(depth=56, head="reference", dtype="float32"))
  # cutout_fill: 'mean' (the reference's: the hole is 0 after normalisation) | 'black'
  # (0 before it; fdjax before 2026-12-06); fdjax.tasks.classification.CUTOUT_FILLS.
  c.augment = ml_collections.ConfigDict(dict(flip=True, crop=True, pad=4, cutout=True,
                                             cutout_size=16, cutout_fill="mean"))
  c.batch_size = 128
  c.eval_batch_size = 512
  c.log_every_steps = 50
  # on_corrupt: 'error' stops at a damaged newest checkpoint (naming the newest intact
  # one); 'previous' resumes from that intact one.
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, keep=2, on_corrupt="error"))
  # A stage on disk made by a different config (fdjax.study.fingerprint): 'stop' (one
  # line naming the stage and the fields) or 'retrain' (it and everything downstream).
  c.on_mismatch = "stop"
  # Which rows of the results table to produce, and for which seeds (comma-separated).
  c.methods = ",".join(PAPER_METHODS)
  c.seeds = "0"
  c.degradations = "jpeg,blur,awgn,sapn"
  # Level range per degradation, 'low:high' in its own units (inclusive; either side may be
  # empty), '' = the whole grid. Training, model selection, evaluation and router usage
  # all use the plan (fdjax.degradations.plan); e.g. levels.blur='0:3', levels.jpeg='10:90'.
  c.levels = ml_collections.ConfigDict({name: "" for name in LEVEL_NAMES})
  # Model selection: 'last' checkpoint, or 'val' = best epoch by accuracy on the held-out
  # validation split under the stage's training degradations (never the test set).
  c.selection = "last"
  # The Ensemble row's tie-break (classification; fdjax.fusion.ensemble.MODES):
  # 'paper_text' (summed softmax over the tied classes, the paper's text) or 'paper_code'
  # (argmax of the summed logits over all classes, what the reference code runs).
  c.ensemble_ties = "paper_text"
  # Stage 1: the clean base model (paper code: SGD 0.1, 200 epochs, milestones 60/120/160 x0.2).
  c.clean = stage_config(200, optimizer_config("sgd", 0.1, milestones=(60, 120, 160)))
  # Stage 2: one expert per degradation, ILIAC recipe (RAdam 1e-3, wd 1e-4, cosine, 100 epochs).
  c.experts = stage_config(100, optimizer_config("radam", 1e-3, schedule="cosine"))
  c.experts.loss = "iliac"          # 'iliac' = CE + cos_weight * (1 - cos) to the clean model; 'ce'
  c.experts.cos_weight = ILIAC_COS_WEIGHT
  c.distill_feature = "stage3"      # post-ReLU output of the last residual stage
  # Combined-degradation stages (BALANCED_STAGES: Scratch, Vanilla FT, Fusing,
  # FusionDistill, the MoE student, restoration's joint base; a block's own
  # task_balance, when not '', overrides this): 'none' = the plain mean loss over the batch;
  # 'loss' = each degradation's share weighted by mean/own loss
  # (fdjax.train.objectives.share_weights).
  c.task_balance = "none"
  # Stage 3: weight fusion. BatchNorm statistics: 'paper' (first expert's), 'average',
  # 'reestimate' (on degraded training batches). ModelSoups reports every variant in
  # fusion.modelsoups_variants; the fused init of Fusing and FusionDistill uses init_batch_stats.
  c.fusion = ml_collections.ConfigDict(dict(
      soup="uniform",              # 'uniform' | 'weighted' (with `weights`) | 'greedy'
      weights="1,1,1,1",           # one per degradation, for soup='weighted'
      init_batch_stats="average", modelsoups_variants="paper,average,reestimate",
      reestimate_batches=200))
  # Stage 4 and the fine-tuning baselines. Batches: batch_size images PER DEGRADATION.
  c.fusiondistill = fusiondistill_config(
      100, optimizer_config("radam", 1e-3, milestones=(30, 70, 90)), alpha=0.1, gamma=1.0)
  c.fusing = stage_config(100, optimizer_config("radam", 1e-3, milestones=(30, 70, 90)))
  c.vanilla = stage_config(200, optimizer_config("radam", 1e-3, milestones=(60, 140, 180)))
  c.scratch = stage_config(200, optimizer_config("sgd", 0.1, milestones=(60, 140, 180)))
  # FusionDistill with a mixture-of-experts student (method 'fusiondistill_moe'), trained
  # with top-`train_k` routing and reported at every K in `ks` (one row each). Same
  # recipe as stage 4 plus MEASNet's balance loss (lambda 1e-4).
  c.moe = fusiondistill_config(
      100, optimizer_config("radam", 1e-3, milestones=(30, 70, 90)), alpha=0.1, gamma=1.0)
  c.moe.update(dict(
      ks="1,2", train_k=2, stages="stage3", routing="image", dispatch="dense", num_prompts=8,
      channel_sharing=False, balance_weight=1e-4,
      expert_loop="auto",           # 'auto' (unroll on CPU, vmap elsewhere) | 'vmap' | 'unroll'
      # Router (issue 11): what it sees ('stage' = the routed stage's input, 'image' = the
      # normalised image, 'stem' = the stem output); Shazeer's noisy top-K in training;
      # expert-prompt init std x prompt_init_scale; router learning rate x router_lr_scale;
      # weight of the cross-entropy between router logits and each share's degradation.
      router_input="stage", noisy_gating=False, prompt_init_scale=1.0, router_lr_scale=1.0,
      router_supervision=0.0))
  # EA-Adam population (method 'ea_adam', fdjax.population): `size` members from the clean
  # model, member i weighting (clean, degradations) by (1 - i/(P-1), i/(P-1) split equally);
  # member 0 frozen when freeze_first. After every `evolve_every`-th epoch an evolutionary
  # epoch of `generations` generations (the official code: 10 Adam epochs, then 200
  # generations; fdjax's default 1 and 1), each: SBX (crossover_prob, eta) with a
  # neighbour among `neighbours` nearest (or any member w.p. random_partner_prob), Gaussian
  # mutation (mutation_prob per member; mutation_std on each conv-kernel element w.p.
  # mutation_rate), MOEA/D replacement (max_replacements) on the validation metric of the
  # first `fitness_examples` validation images. member_loop: 'auto' | 'vmap' | 'unroll'.
  # objectives (fdjax.population.families): 'degradations' (clean + each degradation) or
  # 'perception' (restoration: L1 and RaGAN against one discriminator per member, of
  # critic_width channels and critic_depth stride-2 stages, Adam at critic_lr);
  # perception_fitness: the perceptual objective's fitness, 'gradient_w1' or 'niqe'
  # (fdjax.population.perception_fitness; 'niqe' needs tiles >= 2 96x96 blocks after shave).
  c.ea_adam = stage_config(20, optimizer_config("adam", 1e-4, schedule="constant",
                                                weight_decay=0.0))
  c.ea_adam.update(dict(
      size=5, freeze_first=True, neighbours=3, random_partner_prob=0.3, crossover_prob=0.9,
      eta=20.0, mutation_prob=0.2, mutation_rate=0.02, mutation_std=0.03, max_replacements=1,
      fitness_examples=500, member_loop="auto", objectives="degradations", critic_width=16,
      critic_depth=3, critic_lr=1e-4, perception_fitness="gradient_w1", evolve_every=1,
      generations=1))
  # EA-Adam's fusion network over the frozen members (method 'ea_adam_fusion'): a mixing
  # predictor of `width` channels trained on combined degradations, then baked with the
  # mixing weights averaged over `calibration_batches` validation batches.
  c.ea_adam_fusion = stage_config(2, optimizer_config("adam", 1e-3, schedule="constant",
                                                      weight_decay=0.0))
  c.ea_adam_fusion.update(dict(width=16, calibration_batches=10))
  # Evaluation: Acc(All) over every level (level_stride 1) with fixed keys (seed 301).
  # self_ensemble (image-to-image tasks): every row's test output is the mean over the
  # 8 flips/rotations of its input (8), or over it and its mirror image (2); 0 = none
  # (fdjax.eval.self_ensemble), that many times the evaluation time.
  c.eval = ml_collections.ConfigDict(dict(seed=301, level_stride=1, max_examples=0,
                                          self_ensemble=0))
  return c
