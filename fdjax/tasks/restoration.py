"""Image restoration: images out, L1 in training, PSNR scored.

Batches (``fdjax.data.paired``) are dicts of uint8 ``[B, H, W, 3]`` (0..255):

* paired: ``{'image': degraded input, 'target': clean}`` (e.g. Rain100L's rainy/norain);
* clean-only: ``{'image': clean}``; the input is made on device by ``degrade``
  (synthetic noise, haze, ... from ``fdjax.degradations``), in training by ``views``
  and in evaluation by the engine's transform of ``batch['image']``.

Training views (``views``), per image, on device, the same for input and target:

1. one random ``patch x patch`` crop (none when the batch already is that size);
2. a random left-right flip (``flip``) and a random rotation by 0, 90, 180 or 270
   degrees (``rot90``): together the 8 flips/rotations of the restoration papers;
   real training pairs turn by 0 or 180 degrees only unless ``rotate_real`` (their rain
   keeps falling down the rows, as Rain100L's and the synthetic streaks' do);
3. clean-only batches: ``input = degrade(key, clean patch)`` (the clean patch when
   ``degrade`` is None); paired batches keep the pair's input and ignore ``degrade``;
   mixed batches (``Dataset.training_split``: a 'real' flag per example) keep the real
   pairs' inputs and degrade the others.

With an image prior and ``prior_context = 'tile'`` the whole tile is flipped, rotated
and degraded first, the prior's cue computed from it and carried as a trailing input
channel, then cropped (``restoration_views.training_views``): the cue then describes
more of the image than the crop does, as at inference, where it comes from the whole
image. Degradations with a direction (rain's slant, haze's depth ramp) keep it in both.

They return ``(input, clean, input)``: the teacher sees the student's input, because a
restorer's features describe the degraded image it restores (the classifier's
teacher sees the clean view instead).

Model space: ``model_input`` maps 0..255 to float 0..1; the U-Nets (``fdjax.models``)
return the restored image (the input plus a learned residual) in the same space. ``predict`` pads images of any size to the
network's stride (``fdjax.eval.inference``), crops back and returns float32 0..255,
clipped but not rounded (as PromptIR's and AirNet's test code clamp, then measure).
Scores are per-image PSNR in dB (the headline metric) and SSIM (``fdjax.eval.image_quality``),
on RGB over the whole image, or on the BT.601 Y channel with a shaved border
(``y_channel``, ``shave``: the default; per task ``config.scoring.<degradation>``, see
``fdjax.tasks.restoration_scoring``; ``for_degradation``). The training loss is L1 or
Charbonnier (``loss``).

Study mapping (``fdjax.study``): the base ('clean') restorer trains on every task of the
plan jointly (``base_on_all_tasks``); data come from ``fdjax.data.restoration_sets``
(``load_data``); the Scratch row is called 'All-in-one (scratch)' (``row_labels``).

``config.restoration`` (declared by ``fdjax.config_restoration``, with these defaults
from ``fdjax.tasks.restoration_options.DEFAULTS``)::

    model = 'unet'          # 'unet' (plain 3x3 convs), 'nafnet', 'promptir', 'measnet'
    width = 16              # channels of the top level, doubled per level down
    depth = 2               # down-samplings: images pad to multiples of 2**depth
    blocks = 1              # blocks per encoder level (int or one per level)
    middle_blocks = 1
    decoder_blocks = None   # as blocks (None or 0)
    dtype = 'float32'       # computation dtype ('bfloat16' on accelerators)
    image_prior = 'none'    # 'dark_channel': the image's dark-channel level as a 4th
                            # input channel, a haze cue (fdjax.models.image_prior)
    prior_context = 'patch' # what the cue is computed from in training: 'patch' (the
                            # network's crop) or 'tile' (the whole degraded tile it is
                            # cut from; restoration_views.training_views)
    cue_jitter = 0.0        # with 'tile': half the training cues raised to a level drawn
                            # from 0..cue_jitter (of 255; restoration_views.tile_cue)
    patch = 64              # training patch side (the papers use 128)
    flip = True             # random left-right flips
    rot90 = True            # random 90-degree rotations
    rotate_real = False     # rot90 for real training pairs too (their rain then runs
                            # across the rows half the time; Rain100L's falls down them)
    y_channel = False       # score PSNR on Y (deraining / SR tables) instead of RGB
    shave = 0               # border pixels dropped before scoring
                            # (both: every task's default; config.scoring per task)
    loss = 'l1'             # 'l1' or 'charbonnier' (sqrt(d^2 + 1e-6), 0..1 units)
    extra_metrics = ''      # opt-in columns: 'niqe' (restoration_niqe; lower is better)
    model_options = ''      # the chosen model's own fields, 'name=value,...' (values
                            # Python literals), e.g. 'num_experts=3,k=2' for 'measnet',
                            # 'prompt_dim=8' for 'promptir' (see fdjax.models.PromptIR /
                            # MEASNet / NAFNet); '' = none (a dict also works in code)

FusionDistill-MoE's student (``moe_student``) is the U-Net student of
``fdjax.moe.unet_student`` (``model`` 'unet' or 'nafnet'), routed at the U-Net levels
named by ``config.moe.stages`` (e.g. 'decoder1' or 'middle,decoder1').
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from fdjax.errors import ConfigError
from fdjax.eval import image_quality, inference
from fdjax.config import parse_list
from fdjax.models.image_prior import with_cue
from fdjax.tasks import restoration_niqe, restoration_scoring as scoring_lib
from fdjax.tasks.base import DataSpec, DegradeFn, MetricSpec, masked_sum
from fdjax.tasks.restoration_options import LOSSES, MODELS, model_options, options, shape_fields
from fdjax.tasks.restoration_views import PRIOR_CONTEXTS, cue_jitter_problem, training_views

CHARBONNIER_EPS = 1e-3  # in 0..1 units, as Restormer / MPRNet


@dataclasses.dataclass(frozen=True)
class RestorationTask:
  """Hashable (frozen): equal tasks share memoised jitted predictors.

  patch: training patch side; flip / rot90 / rotate_real: training augmentation
  (rotate_real: quarter turns for real pairs too); y_channel / shave:
  how PSNR is scored (see the module docstring); scoring: the per-degradation
  ``(name, y_channel, shave)`` that differ from them (``config.scoring``);
  extra_metrics: opt-in metrics (``restoration.extra_metrics``, ``restoration_niqe``)."""

  patch: int | None = 64
  flip: bool = True
  rot90: bool = True
  y_channel: bool = False
  shave: int = 0
  loss: str = "l1"
  scoring: scoring_lib.Overrides = ()
  extra_metrics: tuple[str, ...] = ()
  image_prior: str = "none"
  prior_context: str = "patch"
  cue_jitter: float = 0.0
  rotate_real: bool = False
  name = "restoration"
  base_on_all_tasks = True
  row_labels = {"Scratch": "All-in-one (scratch)"}

  def __post_init__(self):
    if self.loss not in LOSSES:
      raise ConfigError(f"restoration.loss must be one of {LOSSES}, got {self.loss!r}")
    restoration_niqe.check_extra_metrics(self.extra_metrics)
    if self.prior_context not in PRIOR_CONTEXTS:
      raise ConfigError(f"restoration.prior_context must be one of {PRIOR_CONTEXTS}, got "
                        f"{self.prior_context!r}")
    problem = cue_jitter_problem(self.cue_jitter, self.image_prior, self.prior_context)
    if problem:
      raise ConfigError(problem)

  @property
  def metric(self) -> MetricSpec:
    return self.metrics[0]

  @property
  def metrics(self) -> tuple[MetricSpec, ...]:
    """PSNR (headline, dB, 2 decimals), SSIM (0..1, 4 decimals), then ``extra_metrics``."""
    y = " (Y)" if self.y_channel and all(y for _, y, _ in self.scoring) else ""
    return (MetricSpec("psnr", f"PSNR{y}", "dB", decimals=2),
            MetricSpec("ssim", f"SSIM{y}", "0..1", decimals=4),
            *(restoration_niqe.EXTRA_METRICS[m] for m in self.extra_metrics))

  @classmethod
  def from_config(cls, config) -> "RestorationTask":
    o = options(config)
    y, shave = bool(o["y_channel"]), int(o["shave"])
    return cls(int(o["patch"]) if o["patch"] else None, bool(o["flip"]), bool(o["rot90"]),
               y, shave, str(o["loss"]), scoring_lib.overrides(config, y, shave),
               tuple(parse_list(str(o["extra_metrics"] or ""))), str(o["image_prior"]),
               str(o["prior_context"]), float(o["cue_jitter"]), bool(o["rotate_real"]))

  def for_degradation(self, name: str) -> "RestorationTask":
    """The task that scores ``name``'s test images (its ``config.scoring`` setting)."""
    found = {n: (y, s) for n, y, s in self.scoring}
    if name not in found:
      return self
    return dataclasses.replace(self, y_channel=found[name][0], shave=found[name][1],
                               scoring=())

  def scoring_labels(self, names) -> dict:
    """``{'clean': 'RGB', 'rain': 'Y', ...}``: how each column is scored; ``{}`` when
    every one is plain RGB (``restoration_scoring.labels``)."""
    return scoring_lib.labels(names, self.y_channel, self.shave, self.scoring)

  def load_data(self, config, seed: int):
    """The restoration ``Dataset`` of ``config.data`` (``fdjax.data.restoration_sets``)."""
    from fdjax.data import restoration_sets

    dataset = restoration_sets.load(config.data, patch=self.patch or 64, seed=seed)
    self._check_shave(dataset, parse_list(config.get("degradations", "")))
    return dataset

  def _check_shave(self, dataset, degradations) -> None:
    """ConfigError when a scoring border (``restoration.shave``, ``config.scoring``)
    leaves nothing of the smallest image it is applied to (a validation image or the
    degradation's test set), found before training instead of at the first score."""
    sides = [min(dataset.validation.images.shape[1:3])] if dataset.validation else []
    for name in ("clean", *degradations):
      task = self.for_degradation(name)
      smallest = min(sides + [min(s) for s in dataset.test_for(name).sizes()])
      if task.shave and 2 * task.shave >= smallest:
        field = (f"scoring.{name}" if any(n == name for n, _, _ in self.scoring)
                 else "restoration.shave")
        raise ConfigError(f"{field}: a border of {task.shave} pixels leaves nothing of the "
                          f"smallest image scored for {name!r} ({smallest} pixels a side)")

  def build_model(self, config, data_spec: DataSpec):
    """The U-Net of ``config.restoration`` (fully convolutional:
    ``data_spec`` only sizes the initialisation)."""
    del data_spec
    o = options(config)
    return MODELS[o["model"]](**shape_fields(o), **model_options(o))

  def moe_student(self, config, data_spec: DataSpec, k: int):
    """FusionDistill-MoE's student: ``fdjax.moe.unet_student.restoration_student``."""
    del data_spec
    from fdjax.moe.unet_student import restoration_student  # it imports this module
    return restoration_student(config, k)

  def moe_variables(self, model, fused_variables, expert_variables, key, image_shape):
    """The student's variables from the fused and per-task U-Nets
    (``fdjax.moe.unet_student.unet_moe_variables``)."""
    from fdjax.moe.unet_student import unet_moe_variables
    return unet_moe_variables(model, fused_variables, expert_variables, key, image_shape)

  def report_images(self, ctx, row_models, workdir: str) -> list[str]:
    """Per task, a PNG grid of a few test images: input | each row | target
    (``fdjax.eval.example_grids``); returns the paths."""
    from fdjax.eval import example_grids
    return example_grids.write_grids(self, ctx, row_models, workdir)

  def views(self, key, batch: dict, degrade: DegradeFn | None = None):
    """``(input, clean, input)`` of ``batch``'s tiles: a ``patch x patch`` crop
    (``restoration_views.training_views``; the module docstring)."""
    return training_views(key, batch, degrade, patch=self.patch, flip=self.flip,
                          rot90=self.rot90, prior=self.image_prior,
                          prior_context=self.prior_context, cue_jitter=self.cue_jitter,
                          rotate_real=self.rotate_real)

  def model_input(self, images) -> jax.Array:
    """uint8 (or float) 0..255 ``[B, H, W, 3]`` -> float32 0..1."""
    return jnp.asarray(images, jnp.float32) / 255.0

  def forward(self, model, variables, images, train: bool = False):
    """``(image float32 0..1 [B, H, W, 3], features)`` of ``model`` on uint8 images of
    any size: padded to ``model.stride``, the image cropped back (features stay at the
    padded size). A model with an image prior gets the cue of the image itself (not of
    its padded copy: the tiled predictor's cue), unless ``images`` carry one."""
    h, w = images.shape[1:3]
    if images.shape[-1] == 3:
      images = with_cue(images, getattr(model, "image_prior", "none"))
    x = inference.pad_to_multiple(self.model_input(images), getattr(model, "stride", 1))
    out, features = model.apply(variables, x, train=train)
    return inference.crop_to(out, h, w), features

  def predict(self, model, variables, images) -> jax.Array:
    """float32 ``[B, H, W, 3]`` in 0..255 (clipped, not rounded): the restored images."""
    return jnp.clip(self.forward(model, variables, images)[0] * 255.0, 0.0, 255.0)

  def identity(self, images) -> jax.Array:
    """The degraded input scored as if restored: float32 0..255 (the 'Input' row)."""
    return jnp.asarray(images, jnp.float32)

  def per_example_loss(self, outputs, target) -> jax.Array:
    """float32 ``[...]``: per image, the mean absolute error (``loss='l1'``) or the mean
    Charbonnier ``sqrt(d^2 + eps^2)`` (0..1 units) between ``outputs`` ``[..., H, W, 3]``
    (model space) and ``target`` (uint8 0..255)."""
    return self._pixel_loss(outputs - self.model_input(target))

  def output_distance(self, outputs, teacher_outputs) -> jax.Array:
    """float32 ``[...]``: per image, the task's loss (L1 or Charbonnier, 0..1 units)
    between a student's and a teacher's outputs ``[..., H, W, 3]`` (both model space):
    response distillation (``fusiondistill.output_weight``)."""
    return self._pixel_loss(outputs - teacher_outputs)

  def _pixel_loss(self, diff) -> jax.Array:
    if self.loss == "charbonnier":
      return jnp.mean(jnp.sqrt(diff * diff + CHARBONNIER_EPS ** 2), axis=(-3, -2, -1))
    return jnp.mean(jnp.abs(diff), axis=(-3, -2, -1))

  def train_metrics(self, outputs, target) -> dict:
    restored = jnp.clip(outputs * 255.0, 0.0, 255.0)
    return {"train_psnr": jnp.mean(image_quality.psnr(restored, target))}

  def per_image(self, outputs, batch: dict) -> dict:
    """``{'psnr': [B], 'ssim': [B]}`` per image (padding images included); SSIM is NaN
    for images under its 11x11 window; a batch's 'grey' field (one-channel reference
    files) scores those on their grey values where scoring is on Y; ``'niqe': [B]``
    with ``extra_metrics`` 'niqe' (``restoration_niqe``). (A caller that needs PSNR
    only jits a function returning only it: XLA then never computes the others,
    ``fdjax.eval.metric.jit_scores``.)"""
    target = batch.get("target", batch["image"])
    kw = dict(y_channel=self.y_channel, shave=self.shave, grey=batch.get("grey"))
    h, w = outputs.shape[-3] - 2 * self.shave, outputs.shape[-2] - 2 * self.shave
    ssim = (image_quality.ssim(outputs, target, **kw) if min(h, w) >= image_quality.SSIM_WINDOW
            else jnp.full(outputs.shape[:-3], jnp.nan, jnp.float32))
    values = {"psnr": image_quality.psnr(outputs, target, **kw), "ssim": ssim}
    if "niqe" in self.extra_metrics:
      values["niqe"] = restoration_niqe.per_image_niqe(outputs, self.shave)
    return values

  def scores(self, outputs, batch: dict) -> dict:
    """``{'psnr': (sum of per-image PSNR dB, count), 'ssim': (sum, count)}`` over the
    unmasked images of ``batch``: ``outputs`` are ``predict``'s (0..255), the reference
    is ``batch['target']`` (paired) or ``batch['image']`` (clean-only, the input having
    been degraded on the way)."""
    return {name: masked_sum(values, batch.get("mask"))
            for name, values in self.per_image(outputs, batch).items()}

  def ensemble(self, member_outputs) -> jax.Array:
    """``[N, B, H, W, 3]`` member images -> their mean ``[B, H, W, 3]``."""
    return jnp.mean(member_outputs, axis=0)
