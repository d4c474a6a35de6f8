"""The restoration schema: ``restoration_config()`` = ``base_config()`` with the
restoration task, its data fields, its model block, its evaluation levels and how each
task is scored (``scoring``).

Every field is declared here, so ``--config.restoration.width=32`` or
``--config.data.root=/data`` override it and a misspelt field fails with the nearest
names (``fdjax.config_fields``); ``fdjax.validate`` checks the values.
"""

from __future__ import annotations

import ml_collections

from fdjax.config import (ILIAC_COS_WEIGHT, LEVEL_NAMES, base_config, fusiondistill_config,
                          optimizer_config, stage_config)
from fdjax.tasks.restoration_options import DEFAULTS

# The training stages of a restoration study (each a `stage_config` block).
RESTORATION_STAGES = ("clean", "scratch", "experts", "vanilla", "fusing", "fusiondistill", "moe")
# The rows a restoration study reports.
RESTORATION_METHODS = ("input", "oracle", "ensemble", "scratch", "vanilla", "modelsoups",
                       "fusing", "fusiondistill", "fusiondistill_moe", "routed_experts")


def per_degradation(**values) -> ml_collections.ConfigDict:
  """``{name: ''}`` for every degradation of ``fdjax.config.LEVEL_NAMES``, updated."""
  block = {name: "" for name in LEVEL_NAMES}
  block.update(values)
  return ml_collections.ConfigDict(block)


def restoration_config() -> ml_collections.ConfigDict:
  """Defaults of a restoration study (``fdjax.data.restoration_sets`` for the data
  fields, ``fdjax.tasks.restoration`` for the ``restoration`` block)."""
  c = base_config()
  c.task = "restoration"
  del c.augment["cutout_fill"]      # classification's (restoration has its own augmentation)
  del c["ensemble_ties"]            # classification's (restoration's Ensemble: the mean)
  c.data.source = "photos"          # 'photos' (embedded) | 'sets' (named sets under root)
  c.data.root = "../shared/data/restoration"   # relative to the repository
  c.data.train = "cbsd432"          # clean-only training sets, comma-separated
  c.data.test = "cbsd68"            # clean-only test set (synthetic degradations)
  c.data.test_pairs = per_degradation()   # degradation -> real paired test set
  c.data.train_pairs = per_degradation()  # degradation -> real training pairs
  c.data.pair_dirs = "rainy,norain"  # input, target folders of the paired sets
  c.data.tile = 0                   # training tile side; 0 = 2 x restoration.patch
  c.data.max_train_images = 0       # > 0: only the first that many clean training images
  c.data.crop_multiple = 0          # > 0: images cropped to a multiple of it (SR: the scale)
  c.data.validation_fraction = 0.05  # of the training images (at least one), held out whole
  c.restoration = ml_collections.ConfigDict(
      {k: (0 if v is None else v) for k, v in DEFAULTS.items()})
  c.degradations = "denoise,rain,haze"
  c.levels.denoise = "0:55"         # blind training: sigma uniform over 0..55
  # Never a degradation's clean level (the input's PSNR there is infinite; the clean
  # column scores clean inputs): fdjax.validate_task refuses it for synthetic test sets.
  c.eval_levels = per_degradation(denoise="15,25,50", rain="0.01,0.03,0.05",
                                  haze="0.5,1,1.5,2", lowlight="0.3,0.6,0.9",
                                  motion_blur="5,10,15", sr="2,3,4")
  # Per task: 'y' / 'rgb' and/or 'shave=<pixels>' over restoration.y_channel / shave
  # (fdjax.tasks.restoration_scoring), e.g. scoring.rain = 'y' as the deraining tables.
  c.scoring = per_degradation()
  c.methods = ",".join(RESTORATION_METHODS)
  c.eval.cost_columns = True        # params and relative FLOPs per row
  c.selection = "val"
  c.batch_size = 8                  # per degradation in combined stages
  c.eval_batch_size = 3
  c.distill_feature = "bottleneck"
  c.fusion.weights = "1,1,1"
  adam = lambda lr, **options: optimizer_config("adam", lr, weight_decay=0.0,
                                                schedule="cosine", **options)
  # From random weights, Adam with beta2 = 0.9 (NAFNet's betas (0.9, 0.9)), not PyTorch's
  # 0.999: a stage of a few thousand steps outlives 0.999's ~1000-step memory of its
  # first, large gradients, which held the step down for the whole stage (BUILD_NOTES.md,
  # "Adam's beta2": blind denoising 27.76 -> 29.96 dB at sigma 25 in the same steps).
  # The stages that fine-tune trained weights keep 0.999 (0.9 there cost FusionDistill
  # 0.23 dB of Rain100L in the :reduced three-task run).
  for stage in ("clean", "scratch"):
    c[stage] = stage_config(4, adam(1e-3, beta2=0.9))
  for stage in ("experts", "vanilla", "fusing"):
    c[stage] = stage_config(2, adam(3e-4))
  # Experts fine-tune from the base model on the task loss alone, L1 / Charbonnier
  # (experts.cos_weight, read only with loss='iliac', stays at its default: validation
  # refuses another value): ILIAC's pull towards the base's features on clean images
  # lowered every expert in the :reduced three-task run (BUILD_NOTES.md,
  # "FusionDistill's knobs on the beta2 experts").
  c.experts.update(loss="ce", cos_weight=ILIAC_COS_WEIGHT)   # kept: stages fingerprint it
  c.fusiondistill = fusiondistill_config(2, adam(3e-4), alpha=1.0,   # L1 carries the image
                                         gamma=1.0)
  # FusionDistill-MoE: the U-Net student of fdjax.moe.unet_student, experts at the
  # routed U-Net levels ('encoder<l>', 'middle', 'decoder<l>'), gates per pixel there.
  c.moe.update(epochs=2, optimizer=adam(3e-4), stages="decoder1", routing="pixel",
               ks="1,2", train_k=2, alpha=1.0, gamma=1.0)
  return c
