"""The FusionDistill study on real CIFAR-10 (the shared image-folder archive), reduced
to fit a 2-core CPU in under an hour: ResNet-20, 10,000 training images, short
schedules, Acc(All) on 1,000 test images at every 10th grid level (both ends kept:
jpeg 11, blur 6, awgn 6, sapn 4 levels).

    python -m fdjax.main --config=configs/cifar10_reduced.py --workdir=runs/c10_reduced

The schedules keep the paper's optimisers (SGD for clean and Scratch, RAdam for the
experts and the fine-tuning stages) on much shorter schedules (step decay for clean,
cosine decay for Scratch, the experts and the one-epoch fine-tuning stages);
combined-degradation stages see every image once per degradation per epoch, as the
reference does. Results and wall time are recorded in BUILD_NOTES.md. The archive's
images are JPEG at quality 75 (``../shared/data/README.md``): the jpeg column is not
comparable with the paper's.
"""

from fdjax.config import (TRAINING_STAGES, apply_runlocal, base_config, config_variants,
                          fusiondistill_config, optimizer_config, stage_config)

VARIANTS = ("runlocal",)


def get_config(arg: str | None = None):
  variants = config_variants(arg, VARIANTS, "cifar10_reduced")
  config = base_config()
  config.data.source = "folder:../shared/data/cifar10-jpeg.tar.gz"
  config.data.normalization = "cifar10"
  config.data.validation_fraction = 0.1
  config.data.max_per_split = 10000
  config.model.depth = 20
  config.model.head = "reference"
  config.batch_size = 128
  config.eval_batch_size = 200  # divides 1,000 test images and 1, 2, 4 or 8 devices
  config.log_every_steps = 40
  config.checkpoint.every_steps = 200
  config.clean = stage_config(10, optimizer_config("sgd", 0.1, milestones=(6, 8)))
  config.experts = stage_config(2, optimizer_config("radam", 1e-3, schedule="cosine"))
  config.experts.loss = "iliac"
  config.experts.cos_weight = 1.0
  config.fusion.reestimate_batches = 20
  config.fusiondistill = fusiondistill_config(1, optimizer_config("radam", 1e-3, schedule="cosine"),
                                              alpha=0.1, gamma=1.0)
  config.moe.epochs = 1
  config.moe.optimizer = optimizer_config("radam", 1e-3, schedule="cosine")
  config.fusing = stage_config(1, optimizer_config("radam", 1e-3, schedule="cosine"))
  config.vanilla = stage_config(1, optimizer_config("radam", 1e-3, schedule="cosine"))
  config.scratch = stage_config(1, optimizer_config("sgd", 0.1, schedule="cosine"))
  config.eval.level_stride = 10
  config.eval.max_examples = 1000
  config.methods = "oracle,ensemble,scratch,vanilla,modelsoups,fusing,fusiondistill,fusiondistill_moe"
  if "runlocal" in variants:
    apply_runlocal(config, max_per_split=1000, depth=None, stages=TRAINING_STAGES,
                   clear_milestones=True)
    config.eval.max_examples = 200
    config.eval.level_stride = 25
  return config
