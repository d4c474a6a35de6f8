"""Restoration quickstart: the whole consolidation study for all-in-one restoration on
scikit-learn's two bundled photographs (no download), a tiny plain-conv U-Net and short
schedules.

    python -m fdjax.main --config=configs/restoration_quickstart.py --workdir=runs/rq

Tasks: denoise (AWGN, blind sigma 0..55, tested at 15/25/50), rain (synthetic streaks)
and haze (synthetic scattering), trained on 48x48 tiles of china.jpg and tested on the
whole flower.jpg (427x640, padded to the U-Net's stride and cropped back); all test sets
are synthetic here. Rows: Input (the degraded input scored), Oracle, Ensemble,
All-in-one (scratch: the joint base itself, the same 16-epoch recipe), Vanilla FT,
ModelSoups (one row: the U-Net has no BatchNorm), Fusing, FusionDistill,
FusionDistill-MoE (K=1) and (K=2) (the U-Net student with three experts at its finest
decoder level, routed per pixel), Routed experts (that student's
router picks one expert per image). Columns: PSNR and SSIM per task and their average,
parameters and relative FLOPs per image, the routers' routing accuracy.
``:tiny`` is a seconds-long version for tests (four rows: Input, Oracle, ModelSoups,
FusionDistill; one epoch per stage): its models are barely trained, and its restored
rows score below the Input row; its table says nothing about the methods.
"""

from fdjax.config import config_variants, set_epochs
from fdjax.config_restoration import RESTORATION_STAGES, restoration_config

VARIANTS = ("tiny",)


def get_config(arg: str | None = None):
  variants = config_variants(arg, VARIANTS, "restoration_quickstart")
  config = restoration_config()
  config.data.source = "photos"
  config.data.tile = 48
  config.data.validation_fraction = 0.05
  config.restoration.update(model="unet", width=16, depth=2, patch=48)
  config.eval_levels.rain = "0.03"  # one level each: the evaluation is half the run's time
  config.eval_levels.haze = "1"
  config.batch_size = 8             # per degradation in combined stages (x3 per step)
  config.eval_batch_size = 3
  config.log_every_steps = 25
  config.checkpoint.every_steps = 200
  set_epochs(config, clean=16, scratch=16, experts=4, vanilla=4, fusing=4, fusiondistill=4,
             moe=4)
  config.clean.optimizer.lr = 2e-3
  config.scratch.optimizer.lr = 2e-3
  if "tiny" in variants:
    config.methods = "input,oracle,modelsoups,fusiondistill"
    config.restoration.update(width=4, depth=1, patch=32)
    config.data.tile = 32
    config.eval_levels.denoise = "25"
    config.eval_levels.rain = "0.03"
    config.eval_levels.haze = "1.5"
    set_epochs(config, **dict.fromkeys(RESTORATION_STAGES, 1))
  return config
