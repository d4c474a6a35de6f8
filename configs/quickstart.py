"""Quickstart: the whole FusionDistill study on scikit-learn's bundled digits (no
download), ResNet-8 and short schedules.

    python -m fdjax.main --config=configs/quickstart.py --workdir=runs/quickstart

Trains the clean model, four experts, the fused model, FusionDistill, every
baseline and the mixture-of-experts student (K=1 and K=2 rows), evaluates Acc(All)
(every 10th grid level, both ends kept) and prints the table; a few minutes on a 2-core CPU.
``configs/quickstart.py:tiny`` is a one-epoch-per-stage version on a subset without
the MoE student (the end-to-end test uses it). ``configs/quickstart.py:population``
runs EA-Adam (``ea_adam,ea_adam_fusion``: a population of P = 3 from the clean model,
objectives clean + the four degradations, then its fusion network) with ModelSoups and
FusionDistill beside it (``:tiny,population``: the population alone). ``:32`` runs on
32x32 digits with CIFAR's crop padding and cutout (the quickstart before 2026-12-02,
4x the compute; BUILD_NOTES' older quickstart figures). ``:bf16``
computes in bfloat16 (``model.dtype``: bfloat16 convolutions and activations, float32
parameters, optimiser state, BatchNorm statistics, losses and metrics). Variants
combine: ``:tiny,bf16``. Digits are 8x8 scans upscaled to 16x16 (``digits:16``), so
accuracies are not CIFAR's (the blur grid, in pixels, is relatively twice as strong as on
32x32 images); the point is a complete, fast run of every stage.
"""

from fdjax.config import (TRAINING_STAGES, apply_runlocal, base_config, config_variants,
                          fusiondistill_config, optimizer_config, stage_config)

VARIANTS = ("tiny", "population", "bf16", "32")   # they combine: ':tiny,bf16'


def get_config(arg: str | None = None):
  variants = config_variants(arg, VARIANTS, "quickstart", combine=True)
  config = base_config()
  config.data.validation_fraction = 0.1
  config.data.normalization = "unit"
  config.model.depth = 8
  config.model.head = "reference"
  config.batch_size = 32            # per degradation in combined stages (x4 per step)
  config.eval_batch_size = 128
  config.log_every_steps = 20
  config.checkpoint.every_steps = 100
  config.clean = stage_config(8, optimizer_config("sgd", 0.05, milestones=(6,)))
  config.experts = stage_config(2, optimizer_config("radam", 1e-3, schedule="cosine"))
  config.experts.loss = "iliac"
  config.experts.cos_weight = 1.0
  config.fusion.reestimate_batches = 20
  config.fusiondistill = fusiondistill_config(2, optimizer_config("radam", 1e-3, milestones=(1,)),
                                              alpha=0.1, gamma=1.0)
  config.moe.epochs = 1
  config.moe.optimizer = optimizer_config("radam", 1e-3, schedule="cosine")
  config.fusing = stage_config(2, optimizer_config("radam", 1e-3, milestones=(1,)))
  config.vanilla = stage_config(2, optimizer_config("radam", 1e-3, milestones=(1,)))
  config.scratch = stage_config(2, optimizer_config("sgd", 0.05, milestones=(1,)))
  config.eval.level_stride = 10
  config.methods = ("oracle,ensemble,scratch,vanilla,modelsoups,fusing,fusiondistill,"
                    "fusiondistill_moe")
  if "32" in variants:  # the quickstart before 2026-12-02: 32x32 digits, CIFAR's augmentation
    config.data.source = "digits"
  else:
    # 16x16 (the scans are 8x8): a quarter of CIFAR's 32x32 compute per image, so the
    # whole study fits a few minutes of a 2-core CPU; crop padding and cutout halved.
    config.data.source = "digits:16"
    config.augment.pad //= 2
    config.augment.cutout_size //= 2
  if "bf16" in variants:
    config.model.dtype = "bfloat16"
  if "tiny" in variants:
    config.methods = "oracle,ensemble,scratch,vanilla,modelsoups,fusing,fusiondistill"
    apply_runlocal(config, max_per_split=256, depth=None, stages=TRAINING_STAGES,
                   clear_milestones=True)
    config.eval_batch_size = 64
    config.fusion.reestimate_batches = 2
    config.eval.level_stride = 25
  if "population" in variants:
    # EA-Adam's rows next to ModelSoups and FusionDistill, the other two ways of merging
    # (the tiny variant, for tests, trains the population alone).
    config.methods = ("ea_adam,ea_adam_fusion" if "tiny" in variants
                      else "modelsoups,fusiondistill,ea_adam,ea_adam_fusion")
    config.ea_adam.update(dict(epochs=4, size=3, fitness_examples=200))
    config.ea_adam.optimizer = optimizer_config("adam", 1e-3, schedule="constant",
                                                weight_decay=0.0)
    config.ea_adam_fusion.epochs = 2
  return config
