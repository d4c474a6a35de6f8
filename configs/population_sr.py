"""EA-Adam's own setting: x4 super-resolution, a population over the perception-distortion
trade-off, merged by averaging and by the fusion network.

    python -m fdjax.main --config=configs/population_sr.py:reduced --workdir=runs/psr

* Data (``data.root``, default ``../shared/data/restoration``; see its README): trained on
  tiles of T91, tested on Set5 and Set14 (evaluated as one test set of 19 images,
  'set5+set14', with a column per set: ``sr[set5]``, ``sr[set14]``; ``per_image.csv``
  names each image '<set>/<name>'), every image cropped to a multiple of 4
  (``data.crop_multiple``).
* Degradation 'sr' at scale 4 (``fdjax.degradations.resize``): MATLAB-style bicubic
  down-sampling (antialiased), each pass rounded to uint8 as MATLAB does, then bicubic
  back to the HR size: the same-size U-Net restores the SRCNN/VDSR-style up-sampled input.
* Scores: PSNR and SSIM on the Y channel (BT.601) with 4 border pixels shaved, the SR
  tables' convention, and NIQE (``restoration.extra_metrics='niqe'``; no reference,
  4 border pixels cropped, lower is better; fdjax's CBSD432 pristine model, so not
  comparable with published NIQE figures). The Input row is the bicubic baseline (Set5 28.43 dB / 0.8111,
  Set14 25.99 dB / 0.7029 here; published 28.42 / 0.8104 and 26.00 / 0.7027). Set14's
  ``img_003`` is a one-channel PNG, scored on its grey values as the MATLAB scripts of
  the published tables do (``fdjax.eval.image_quality``; on BT.601 Y of three equal
  channels, BasicSR's reading, Set14 would read 26.09).
* Stages: 'clean' = the L1 model (EA-Adam's pretrained distortion model, member 0, frozen);
  'ea_adam' = P members from it, objectives distortion (L1) and perception (RaGAN against
  a discriminator per member, trained from scratch in the same step; ``ea_adam.objectives
  = 'perception'``), evolved after every epoch on validation PSNR and a gradient-statistics
  distance (``fdjax.eval.gradient_stats``: a discriminator-free perceptual proxy;
  ``ea_adam.perception_fitness='niqe'`` needs tiles of >= 200 px, which T91's small
  images cannot give); 'ea_adam_fusion' = the fusion network over the members (trained on L1).
* Rows: Input (bicubic), EA-Adam best member, uniform and validation-weighted averages,
  EA-Adam fusion (dynamic) and (baked). ``seed_<s>/ea_adam/merged/merged.json`` and
  ``pareto.png`` beside it: the members' validation (PSNR, -gradient W1) front with the
  averages.

Variants: none = EA-Adam's scale on an accelerator (P = 5, width 32, 64x64 patches cut
from 72x72 tiles: T91's smallest image is 78 px, so EA-Adam's 96x96 patches would need
a set without it);
``:reduced`` = meant to finish in at most 60 minutes on a 2-core CPU (P = 5, width 16,
48x48 patches, short schedules; measured 14m20s alone on a 2-core EPYC at 0c0cc36,
15m30s at bb8d131 with test files beside it for three minutes; table in BUILD_NOTES.md);
``:smoke`` = a minute or two (tiny model,
P = 3, a few images, one epoch per stage).
"""

from fdjax.config import config_variants, optimizer_config, set_epochs
from fdjax.config_restoration import restoration_config

STAGES = ("clean", "ea_adam", "ea_adam_fusion")
VARIANTS = ("reduced", "smoke")


def get_config(arg: str | None = None):
  variants = config_variants(arg, VARIANTS, "population_sr")
  config = restoration_config()
  config.data.source = "sets"
  config.data.root = "../shared/data/restoration"
  config.data.train = "t91"
  config.data.test = "set5,set14"
  config.data.crop_multiple = 4
  config.data.tile = 72                      # T91's smallest image is 78 px
  config.data.validation_fraction = 0.05
  config.degradations = "sr"
  config.levels.sr = "4:4"                   # train at x4 only
  config.eval_levels = {k: "" for k in config.eval_levels.keys()}
  config.eval_levels.sr = "4"
  config.restoration.update(model="unet", width=32, depth=2, blocks=2, patch=64,
                            y_channel=True, shave=4, flip=True, rot90=True,
                            extra_metrics="niqe")
  config.methods = "input,ea_adam,ea_adam_fusion"
  config.selection = "last"
  config.eval.cost_columns = False
  config.batch_size = 16
  config.eval_batch_size = 1
  config.log_every_steps = 50
  config.checkpoint.every_steps = 500
  adam = lambda lr: optimizer_config("adam", lr, weight_decay=0.0, schedule="constant")
  # The L1 model (clean) keeps the restoration schema's optimiser for stages that train
  # from random weights: Adam 1e-3, cosine, beta2 = 0.9, whose 0.999 predecessor held
  # this stage 0.56 dB lower on Set5+Set14 in the same steps (2026-12-02, Set14 then on
  # Y of its one-channel image's three channels; BUILD_NOTES.md,
  # "population_sr:reduced, measured"). The population and the fusion network fine-tune
  # trained weights and keep PyTorch's 0.999.
  config.ea_adam.optimizer = adam(1e-4)
  config.ea_adam.update(size=5, objectives="perception", fitness_examples=64, critic_width=32,
                        critic_depth=3, critic_lr=1e-4, perception_fitness="gradient_w1")
  config.ea_adam_fusion.optimizer = adam(1e-3)
  config.ea_adam_fusion.calibration_batches = 10
  set_epochs(config, clean=100, ea_adam=20, ea_adam_fusion=5)
  if "reduced" in variants:
    config.restoration.update(width=16, depth=2, blocks=1, patch=48)
    config.batch_size = 8
    config.ea_adam.update(fitness_examples=24, critic_width=16)
    config.ea_adam_fusion.calibration_batches = 4
    set_epochs(config, clean=20, ea_adam=8, ea_adam_fusion=2)
  elif "smoke" in variants:
    config.restoration.update(width=8, depth=1, blocks=1, patch=32)
    config.data.tile = 64
    config.data.max_train_images = 8
    config.data.max_per_split = 8
    config.data.validation_fraction = 0.2
    config.eval.max_examples = 2
    config.batch_size = 4
    config.log_every_steps = 10
    config.ea_adam.update(size=3, fitness_examples=4, critic_width=4, critic_depth=2)
    config.ea_adam_fusion.update(width=4, calibration_batches=1)
    set_epochs(config, **dict.fromkeys(STAGES, 1))
  return config
