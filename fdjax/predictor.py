"""A finished run as one function of uint8 images, needing nothing but the run's path::

    from fdjax.predictor import load_predictor
    restore = load_predictor("runs/restoration", "fusiondistill")
    clean = restore(noisy_uint8)          # [H, W, 3] uint8 -> [H, W, 3] uint8, any H, W
    classify = load_predictor("runs/quickstart", "fusiondistill")
    label = classify(image_uint8)         # [H, W, 3] -> int; [B, H, W, 3] -> int64 [B]

The config the model's stage was made with (its ``config.json``, else the run's) and
the run's ``run.json`` rebuild the task and the model (``fdjax.load.load_model``); what the predictor returns depends on the run's task:

* restoration (``kind = 'image'``): the task's ``predict`` (padded to the network's
  stride, cropped back, float 0..255 clipped) rounded half to even (``np.rint``) to
  uint8. Images with more than ``Tiling.max_pixels`` pixels run as overlapping tiles
  (``fdjax.eval.inference.apply_tiled``), which bounds memory and is close to, not
  identical with, the whole-image result (a U-Net's receptive field crosses tile edges;
  a margin at least its radius makes the plain U-Net's exact). A model that pools over
  its whole input (``pools_globally``: NAFNet's channel attention, PromptIR's prompts,
  the routers of MEASNet and of the MoE student) sees each tile alone, however wide the
  margin: the first tiled image says so in a warning (the MoE student at K=2 differed by
  up to 7 levels of 255, at a quarter of the pixels of a 1200x1600 photo).
  A model with an image prior (``restoration.image_prior``) gets the whole image's cue
  with every tile, as its trailing input channel (``fdjax.models.image_prior``).
* classification (``kind = 'class'``): the arg-max class of the task's logits. Images
  must have the run's size (``run.json`` ``image_shape``); ``fdjax.apply`` resizes files.

Bad input (not uint8, not ``[..., H, W, 3]``, a classifier's wrong size) is a
``DataError`` naming what was expected.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from absl import logging

from fdjax.errors import ConfigError, DataError
from fdjax.eval import inference
from fdjax.eval.metric import jit_clean, predictor
from fdjax.eval.self_ensemble import check_size, self_ensemble as ensembled
from fdjax.image_input import host_images, image_problem
from fdjax.load import LoadedModel, load_model
from fdjax.models.image_prior import with_cue


@dataclasses.dataclass(frozen=True)
class Tiling:
  """When and how a restorer tiles: images above ``max_pixels`` (H x W) run as tiles of
  ``tile`` pixels overlapping by ``overlap``; each tile's ``margin`` pixels (None:
  ``overlap // 4``) at an edge inside the image are dropped and the rest of the overlaps
  averaged; ``tile_batch`` tiles per call. ``max_pixels=0`` never tiles. A margin at
  least the network's receptive-field radius gives the whole-image result, for a
  network that does not pool over its whole input (the module docstring)."""

  max_pixels: int = 1 << 20
  tile: int = 512
  overlap: int = 64
  margin: int | None = None
  tile_batch: int = 4

  def __post_init__(self):
    margin = self.overlap // 4 if self.margin is None else self.margin
    if self.max_pixels < 0 or self.tile < 1 or not 0 <= self.overlap < self.tile \
        or not 0 <= margin <= self.overlap // 2 or self.tile_batch < 1:
      raise ConfigError(f"tiling needs max_pixels >= 0, tile >= 1, 0 <= overlap < tile, "
                        f"0 <= margin <= overlap // 2 and tile_batch >= 1, got {self}")

  def check_stride(self, stride: int) -> None:
    """ConfigError unless tiles of a network of ``stride`` (tiles are rounded down to a
    multiple of it, and start at multiples of it) can advance: checked when the
    restorer is built, not at the first large image."""
    tile = self.tile // stride * stride
    if (tile - self.overlap) // stride < 1:
      raise ConfigError(
          f"tiles of {self.tile} pixels overlapping by {self.overlap} do not fit a network "
          f"of stride {stride}: the tile is rounded down to a multiple of {stride} "
          f"({tile}) and must exceed the overlap by at least {stride} (e.g. --tile="
          f"{max(self.tile, (self.overlap // stride + 2) * stride)})")


@dataclasses.dataclass(frozen=True)
class Predictor:
  """``predictor(images)``: see the module docstring. kind: 'image' or 'class';
  loaded: the ``LoadedModel`` (model, variables, config, run_info, path)."""

  fn: Callable
  kind: str
  loaded: LoadedModel

  def __call__(self, images):
    return self.fn(images)

  def __repr__(self) -> str:
    return f"Predictor(kind={self.kind!r}, loaded={self.loaded!r})"

  @property
  def class_names(self) -> list[str]:
    return list(self.loaded.run_info.get("class_names", []))


def check_images(images) -> np.ndarray:
  """``images`` as a uint8 numpy array ``[H, W, 3]`` or ``[B, H, W, 3]``, or DataError."""
  x = host_images(images)
  problem = image_problem(x.shape, x.dtype)
  if problem:
    raise DataError(problem)
  return x


def to_uint8(images) -> np.ndarray:
  """float 0..255 -> uint8: rounded half to even, clipped to 0..255."""
  return np.clip(np.rint(np.asarray(images, np.float32)), 0, 255).astype(np.uint8)


def image_restorer(task, model, variables, tiling: Tiling | None = Tiling(),
                   self_ensemble: int = 0) -> Callable:
  """``uint8 [H, W, 3] -> uint8 [H, W, 3]`` (or ``[B, H, W, 3]``, one size) of a
  restoration ``model`` with ``variables`` (in memory: e.g. a stage's result inside the
  study, for ``fdjax.eval.image_grid``); tiled above ``tiling.max_pixels`` (None: never);
  ``self_ensemble``: 2 or 8, the mean over that many flips/rotations
  (``fdjax.eval.self_ensemble``; tiled images: per tile); 0: none."""
  predict_fn = predictor(task, model)
  size = check_size(self_ensemble)
  jitted = jit_clean(ensembled(predict_fn, size) if size else predict_fn)
  stride = int(getattr(model, "stride", 1))
  if tiling is not None and tiling.max_pixels:
    tiling.check_stride(stride)
  prior = str(getattr(model, "image_prior", "none"))
  warned = []

  def batched(images):
    return jitted(variables, images)

  def predict(images):
    x = check_images(images)
    batch = x[None] if x.ndim == 3 else x
    h, w = batch.shape[1:3]
    if tiling is not None and tiling.max_pixels and h * w > tiling.max_pixels:
      if getattr(model, "pools_globally", False) and not warned:
        warned.append(True)
        logging.warning(
            "%s pools over its whole input: an image above %d pixels runs as tiles, each "
            "seen alone, so its output differs from the whole image's however wide the "
            "margin (a larger max_pixels, --max_pixels for fdjax.apply, runs whole images "
            "as memory allows)", type(model).__name__, tiling.max_pixels)
      # every tile gets the whole image's cue, as the untiled image computes it
      out = inference.apply_tiled(batched, np.asarray(with_cue(batch, prior)),
                                  tile=tiling.tile, overlap=tiling.overlap,
                                  margin=tiling.margin, multiple=stride,
                                  tile_batch=tiling.tile_batch)
    else:
      out = batched(batch)
    out = to_uint8(out)
    return out[0] if x.ndim == 3 else out

  return predict


def image_classifier(task, model, variables, image_shape, batch_size: int = 256) -> Callable:
  """``uint8 [H, W, 3] -> int`` or ``[B, H, W, 3] -> int64 [B]``: the arg-max class of
  ``model``'s logits; images must be ``image_shape`` (H, W, 3)."""
  jitted = jit_clean(predictor(task, model))
  shape = tuple(image_shape)

  def predict(images):
    x = check_images(images)
    batch = x[None] if x.ndim == 3 else x
    if tuple(batch.shape[1:]) != shape:
      raise DataError(f"this model classifies {shape[0]}x{shape[1]} images (height x width), "
                      f"got {batch.shape[1]}x{batch.shape[2]}; resize them first")
    labels = np.concatenate([np.argmax(np.asarray(jitted(variables, batch[i:i + batch_size])),
                                       axis=-1) for i in range(0, len(batch), batch_size)])
    return int(labels[0]) if x.ndim == 3 else labels.astype(np.int64)

  return predict


def restorer(loaded: LoadedModel, tiling: Tiling | None = Tiling(),
             self_ensemble: int = 0) -> Callable:
  """``image_restorer`` of a loaded run's model."""
  return image_restorer(loaded.task, loaded.model, loaded.variables, tiling, self_ensemble)


def classifier(loaded: LoadedModel, tiling: Tiling | None = None,
               self_ensemble: int = 0) -> Callable:
  """``image_classifier`` of a loaded run's model at the run's image size (``tiling``
  unused: whole images; ``self_ensemble`` refused: it averages output images)."""
  del tiling
  if self_ensemble:
    raise ConfigError("self-ensemble averages restored images over flips and rotations; "
                      "this run classifies")
  return image_classifier(loaded.task, loaded.model, loaded.variables,
                          loaded.run_info["image_shape"])


# The run's task name -> (predictor kind, builder). A new task adds its entry.
FOR_TASK = {"restoration": ("image", restorer), "classification": ("class", classifier)}


def load_predictor(run: str, method: str = "fusiondistill", seed: int | None = None, *,
                   k: int | None = None, tiling: Tiling | None = Tiling(),
                   self_ensemble: int = 0) -> Predictor:
  """The model ``method`` of finished run ``run`` as a ``Predictor`` (module docstring).

  ``method``: a model name of ``fdjax.load.load_model`` ('fusiondistill', 'clean',
  'expert_<degradation>', 'fusiondistill_moe', ...); ``seed``: default the run's
  smallest; ``k``: top-K of 'fusiondistill_moe'; ``tiling``: see ``Tiling``;
  ``self_ensemble``: restoration only, 2 or 8 (``fdjax.eval.self_ensemble``: the mean
  over each image and its mirror image, or over its 8 flips/rotations), as a run with
  ``eval.self_ensemble`` scores it; 0: none.
  Raises ``fdjax.load.RunError`` / ``UnknownModelError`` (one-line ``UserError``s).
  """
  loaded = load_model(run, method, seed, k)
  kind, build = FOR_TASK[loaded.task.name]
  return Predictor(build(loaded, tiling, self_ensemble), kind, loaded)
