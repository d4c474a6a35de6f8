"""The field's three-task all-in-one setting (AirNet / PromptIR): denoise, derain, dehaze.

    python -m fdjax.main --config=configs/restoration_3task.py:reduced --workdir=runs/r3

* denoise: AWGN, blind training over sigma 0..55 on CBSD432, tested at sigma 15, 25, 50
  on CBSD68 (synthetic: noise added in float, clipped and truncated to uint8 as
  PromptIR's and AirNet's test code);
* derain ('rain'): trained on the synthetic streaks of ``fdjax.degradations`` plus the
  real ``raintrain`` pairs, tested on the REAL Rain100L pairs (input = the rainy image);
* dehaze ('haze'): atmospheric scattering, synthetic, tested on CBSD68 (no SOTS offline).

Data: the archives of ``data.root`` (default ``../shared/data/restoration`` relative to
the repository; see its README). Model: the plain 3x3-conv U-Net. Rows: Input (the
degraded inputs scored: the Rain100L reference), Oracle, Ensemble, All-in-one
(scratch), Vanilla FT, ModelSoups, Fusing, FusionDistill, FusionDistill-MoE (K=1),
(K=2) (experts at the finest decoder level, routed per pixel), Routed experts (that
student's router picks one expert per image, the expert restores it).

Scoring as PromptIR's three-task table: PSNR and SSIM of deraining on the Y channel
(BT.601, whole image: ``config.scoring.rain = 'y'``; its column reads ``rain (rain100l,
real, Y)``), denoising and dehazing (and the clean column, and model selection) on RGB.

Variants: none = the full setting (accelerator: width 32, depth 3, 128x128 patches);
``:reduced`` = a CPU run meant to finish in at most 60 minutes on a 2-core CPU
(0.32M-parameter U-Net, 64x64 patches, the first 200 CBSD432 photos, the first 24
images of each test set, haze tested at beta 1 only); ``:smoke`` = a minute or two
(tiny model, 4 images per training set, 2 per test set, one epoch per stage).
"""

from fdjax.config import set_epochs
from fdjax.config_restoration import RESTORATION_STAGES, restoration_config


def get_config(arg: str | None = None):
  config = restoration_config()
  config.data.source = "sets"
  config.data.root = "../shared/data/restoration"
  config.data.train = "cbsd432"
  config.data.test = "cbsd68"
  config.data.test_pairs.rain = "rain100l"
  config.data.train_pairs.rain = "raintrain"
  config.data.pair_dirs = "rainy,norain"
  config.data.validation_fraction = 0.02
  config.degradations = "denoise,rain,haze"
  config.levels.denoise = "0:55"
  config.levels.haze = "0.2:2"
  config.eval_levels.denoise = "15,25,50"
  config.eval_levels.haze = "0.5,1,1.5"
  config.scoring.rain = "y"     # deraining on Y, as PromptIR's table; the others on RGB
  config.restoration.update(model="unet", width=32, depth=3, blocks=2, patch=128)
  config.batch_size = 16
  config.eval_batch_size = 3
  config.log_every_steps = 100
  config.checkpoint.every_steps = 500
  set_epochs(config, clean=30, scratch=40, experts=10, vanilla=10, fusing=10,
             fusiondistill=10, moe=10)
  if arg == "reduced":
    config.restoration.update(width=24, depth=2, blocks=1, patch=64)
    config.data.max_train_images = 200
    config.batch_size = 8
    config.eval.max_examples = 24
    config.eval_levels.haze = "1"
    set_epochs(config, clean=3, scratch=3, experts=2, vanilla=1, fusing=1, fusiondistill=1,
               moe=1)
  elif arg == "smoke":
    config.restoration.update(width=8, depth=1, blocks=1, patch=32)
    config.data.max_per_split = 4
    config.eval.max_examples = 2
    config.data.validation_fraction = 0.1
    config.batch_size = 4
    config.eval_levels.haze = "1"
    set_epochs(config, **dict.fromkeys(RESTORATION_STAGES, 1))
  elif arg:
    raise ValueError(f"unknown restoration_3task variant {arg!r}; use :reduced, :smoke or "
                     f"nothing")
  return config
