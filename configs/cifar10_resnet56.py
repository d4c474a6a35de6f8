"""CIFAR-10, ResNet-56, the paper's hyperparameters (FusionDistill, WACV-W 2024).

    python -m fdjax.main --config=configs/cifar10_resnet56.py --workdir=runs/c10_r56

Needs a prepared TFDS cifar10 (``--config.data.data_dir``) or use
``configs/cifar10_folder.py`` for the offline image-folder archive. Clean stage:
200 epochs of SGD, 10 million image steps: at the 78 images/s of a 2-core CPU (both
cores, ``fdjax.cpu_flags``; BUILD_NOTES.md, "XLA:CPU convolutions on two cores") about
1.5 days; not yet timed on an accelerator.
``configs/cifar10_resnet56.py:runlocal`` shrinks everything for a smoke test.

Where the paper's text and its official code differ, the defaults follow the text
(``fdjax.config.PAPER_CODE``: what differs, and the overrides that run as the code does).
"""

from fdjax.config import TRAINING_STAGES, apply_runlocal, base_config, config_variants

VARIANTS = ("runlocal",)


def get_config(arg: str | None = None):
  variants = config_variants(arg, VARIANTS, "cifar10_resnet56")
  config = base_config()
  config.data.source = "tfds:cifar10"
  config.data.normalization = "cifar10"
  # The reference trains on all 50,000 training images (validation_split: 0.0) and the
  # paper's 90/10 split only tuned its hyperparameters: no split here ('last' selection).
  config.data.validation_fraction = 0.0
  if "runlocal" in variants:
    apply_runlocal(config, max_per_split=512, stages=TRAINING_STAGES, clear_milestones=True)
  return config
