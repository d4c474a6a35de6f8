"""Image classification: logits out, cross-entropy in training, top-1 accuracy scored.

Training views follow the FusionDistill code, per image: random horizontal flip of
the clean image, then (optionally) degradation, then zero padding and one random
crop shared by the clean and degraded views, then cutout on the view the student
trains on. Everything runs on device from uint8 ``[B, H, W, 3]`` batches (0..255).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fdjax.data import augment
from fdjax.models import CHANNEL_STATS, cifar_resnet, normalize
from fdjax.tasks.base import DTYPES, DataSpec, DegradeFn, MetricSpec, masked_sum


@dataclasses.dataclass(frozen=True)
class Augment:
  """On-device augmentation switches (``config.augment``); pad and cutout in pixels."""

  flip: bool = True
  crop: bool = True
  pad: int = 4
  cutout: bool = True
  cutout_size: int = 16
  cutout_fill: str = "mean"   # CUTOUT_FILLS

  @classmethod
  def from_config(cls, cfg) -> "Augment":
    return cls(bool(cfg.flip), bool(cfg.crop), int(cfg.pad), bool(cfg.cutout),
               int(cfg.cutout_size), str(cfg.get("cutout_fill", "black")))

  def check(self, size: tuple[int, int]) -> None:
    """ConfigError when the augmentation would leave images of ``size`` (H, W) without
    content: a crop padding of the image's side or more (a crop can then be all
    padding), a cutout square of twice the side or more (it blanks every image whole)."""
    from fdjax.errors import ConfigError

    side = min(size)
    if self.crop and self.pad >= side:
      raise ConfigError(f"augment.pad={self.pad} is not below the images' side {side}: "
                        f"a crop can then hold padding only")
    if self.cutout and self.cutout_size >= 2 * side:
      raise ConfigError(f"augment.cutout_size={self.cutout_size} is at least twice the "
                        f"images' side {side}: the cutout square, centred anywhere in the "
                        f"image, blanks all of it")


# What the cutout square holds. 'mean': the normalisation's channel means rounded to
# uint8, within 0.5/std (0.008 for CIFAR) of 0 after normalisation: the reference's
# hole (its cutout multiplies the normalised tensor by the mask,
# utils/data/datasets.py). 'black': 0 before normalisation, about -1.9 after (fdjax
# before 2026-12-06).
CUTOUT_FILLS = ("mean", "black")


def cutout_fill(fill: str, normalization: str) -> np.ndarray:
  """uint8 ``[3]``: the cutout square's colour (``CUTOUT_FILLS``)."""
  if fill not in CUTOUT_FILLS:
    raise ValueError(f"augment.cutout_fill must be one of {CUTOUT_FILLS}, got {fill!r}")
  if fill == "black":
    return np.zeros(3, np.uint8)
  return np.round(np.asarray(CHANNEL_STATS[normalization][0])).astype(np.uint8)


NO_AUGMENT = Augment(flip=False, crop=False, cutout=False)


def model_dtype(name: str):
  """``config.model.dtype`` -> the compute dtype of the classifiers (``CifarResNet``,
  ``MoEResNet``). ``'bfloat16'`` is the tested mixed-precision mode (convolutions and
  activations bfloat16; parameters, optimiser state, BatchNorm statistics, head, losses,
  router and metrics float32; ``tests/test_bf16.py``). ``'float16'`` has the same
  layout but no loss scaling, so small gradients can underflow: untested."""
  if name not in DTYPES:
    raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {name!r}")
  return DTYPES[name]


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
  """Hashable (frozen): equal tasks share memoised jitted predictors.

  normalization: key of ``fdjax.models.CHANNEL_STATS`` (uint8 0..255 -> standardised).
  augment: the training augmentation.
  """

  normalization: str = "cifar10"
  augment: Augment = Augment()
  ensemble_ties: str = "paper_text"   # fdjax.fusion.ensemble.MODES
  name = "classification"
  metric = MetricSpec("accuracy", "Top-1 accuracy", "%", scale=100.0, higher_is_better=True)
  metrics = (metric,)
  base_on_all_tasks = False
  row_labels = {}

  def __post_init__(self):
    if self.normalization not in CHANNEL_STATS:
      raise ValueError(f"data.normalization must be one of {sorted(CHANNEL_STATS)}, "
                       f"got {self.normalization!r}")

  @classmethod
  def from_config(cls, config) -> "ClassificationTask":
    return cls(config.data.normalization, Augment.from_config(config.augment),
               config.get("ensemble_ties", "paper_text"))

  def load_data(self, config, seed: int):
    """``fdjax.data.load`` of ``config.data`` (the validation split depends on ``seed``)."""
    from fdjax import data as data_lib

    d = config.data
    dataset = data_lib.load(d.source, validation_fraction=d.validation_fraction, seed=seed,
                            cache_dir=d.cache_dir or None, data_dir=d.data_dir or None,
                            max_per_split=d.max_per_split or None)
    self.augment.check(dataset.image_shape[:2])
    return dataset

  def build_model(self, config, data_spec: DataSpec):
    """The dense CIFAR ResNet of ``config.model`` with ``data_spec.num_classes`` outputs."""
    return cifar_resnet(config.model.depth, data_spec.num_classes, config.model.head,
                        dtype=model_dtype(config.model.dtype))

  def moe_student(self, config, data_spec: DataSpec, k: int):
    """FusionDistill-MoE's student: the ``MoEResNet`` of ``fdjax.moe.student.resnet_student``."""
    from fdjax.moe.student import resnet_student  # fdjax.moe.student imports this module
    return resnet_student(config, data_spec.num_classes, k)

  def moe_variables(self, model, fused_variables, expert_variables, key, image_shape):
    """The student's variables from the fused and per-degradation ResNets
    (``fdjax.moe.init.moe_variables``)."""
    from fdjax.moe.init import moe_variables
    return moe_variables(model, fused_variables, expert_variables, key, image_shape)

  def views(self, key, batch: dict, degrade: DegradeFn | None = None):
    """``(student_input, labels, teacher_input)``: uint8 ``[B,H,W,3]``, int32 ``[B]``,
    uint8. The teacher sees the clean view with the student's flip and crop; without
    ``degrade`` the student sees the augmented clean image (with cutout)."""
    a = self.augment
    k_flip, k_degrade, k_crop, k_cutout = jax.random.split(key, 4)
    images = batch["image"]
    if a.flip:
      images = augment.random_flip(k_flip, images)
    degraded = degrade(k_degrade, images) if degrade is not None else images
    if a.crop:
      images, degraded = augment.random_crop(k_crop, images, degraded, pad=a.pad)
    if a.cutout:
      degraded = augment.cutout(k_cutout, degraded, size=a.cutout_size,
                                fill=cutout_fill(a.cutout_fill, self.normalization))
    return degraded, batch["label"], images

  def model_input(self, images) -> jax.Array:
    """uint8 ``[B,H,W,3]`` 0..255 -> float32 standardised per channel."""
    return normalize(images, self.normalization)

  def forward(self, model, variables, images, train: bool = False):
    """``(logits [B,C], features)`` of ``model`` on uint8 images, in eval mode unless
    ``train`` (without updating BatchNorm statistics: training losses apply the model
    through ``fdjax.train.objectives.train_apply``)."""
    return model.apply(variables, self.model_input(images), train=train)

  def predict(self, model, variables, images) -> jax.Array:
    """logits float32 ``[B, C]`` of ``model`` on uint8 ``[B,H,W,3]`` images."""
    return self.forward(model, variables, images)[0]

  def per_example_loss(self, logits, labels) -> jax.Array:
    """float32 ``[...]``: softmax cross-entropy of logits ``[..., C]`` and labels ``[...]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)

  def output_distance(self, logits, teacher_logits) -> jax.Array:
    """float32 ``[...]``: ``KL(softmax(teacher) || softmax(student))`` per example (nats,
    temperature 1): Hinton's response distillation (``fusiondistill.output_weight``)."""
    return optax.losses.kl_divergence_with_log_targets(jax.nn.log_softmax(logits, axis=-1),
                                                       jax.nn.log_softmax(teacher_logits, axis=-1))

  def train_metrics(self, logits, labels) -> dict:
    return {"train_accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

  def scores(self, logits, batch: dict) -> dict:
    """``{'accuracy': (correct, count)}``, int32 scalars over the unmasked examples of
    ``batch`` (logits ``[B, C]``, ``batch['label']`` ``[B]``, optional bool ``mask`` ``[B]``)."""
    hits = jnp.argmax(logits, axis=-1) == batch["label"]
    return {"accuracy": masked_sum(hits, batch.get("mask"))}

  def ensemble(self, member_logits) -> jax.Array:
    """``[N, B, C]`` member logits -> one-hot ``[B, C]`` of the plurality vote (ties
    broken as ``ensemble_ties`` says: the paper's text or the reference code)."""
    from fdjax.fusion import ensemble_predict

    labels = ensemble_predict(member_logits, mode=self.ensemble_ties)
    return jax.nn.one_hot(labels, member_logits.shape[-1])
