"""What a task is: the pieces of a study that depend on what the network outputs.

A study (``fdjax.pipeline``) trains, fuses, distils and evaluates models without
knowing whether they classify or restore images; everything that does depend on it
sits behind a ``Task``:

* ``build_model(config, data_spec)``: a Flax module ``apply(variables, x, train) ->
  (outputs, features)``;
* ``views(key, batch, degrade) -> (student_input, target, teacher_input)``: the
  training views of one batch (augmentation and degradation on device);
* ``model_input(images_uint8)``: the model's own input normalisation; ``forward``
  and ``predict`` are the ONE way a trained model is applied to uint8 images;
* ``per_example_loss(outputs, target) -> [B]`` and ``scores(outputs, batch) -> {name:
  (sum, count)}`` for every metric of ``metrics``: every stage's loss is ``weights x
  per-example losses``; every evaluation metric is a ratio of sums, so it adds up over
  batches, levels and devices (``fdjax.eval.metric.split_scores`` is the one scorer of
  a split: tables, model selection, greedy soups, population fitness);
* ``metric``: a ``MetricSpec`` that drives reports, plots, model selection and
  greedy soups (the headline, ``metrics[0]``); ``metrics``: every metric reported;
* ``load_data(config, seed) -> Dataset``: the task's data (one entry point,
  ``fdjax.study.load_dataset``); ``base_on_all_tasks``: the base ('clean') stage trains
  on the combined degradations (restoration) instead of clean images; ``row_labels``:
  the task's names of table rows;
* ``ensemble(member_outputs [N, B, ...]) -> [B, ...]``: how members vote;
* ``moe_student(config, data_spec, k)`` and ``moe_variables(model, fused, experts, key,
  image_shape)``: FusionDistill-MoE's mixture-of-experts student with top-``k`` routing,
  and its variables from the fused model and the per-degradation experts;
* optional, ``report_images(ctx, row_models, workdir) -> paths``: example images of the
  rows that run one model (``fdjax.methods.base.Output.models``), written once per study
  from the first seed (restoration: a comparison grid per task); a task without it
  writes none;
* optional, ``for_degradation(name) -> task`` and ``scoring_labels(names) -> {column:
  label}``: a task that scores degradations differently (restoration: ``config.scoring``,
  e.g. deraining on the Y channel) returns the task scoring ``name``'s test images, and
  how each column was scored (``{}`` when uniform; ``fdjax.eval.levels.evaluate_all``
  records it, reports label the columns); a task without them scores every column alike;
* optional, ``per_image(outputs, batch) -> {metric: [B]}``: each image's values
  (``per_image.csv``, the per-set means of a combined test set, EA-Adam's perception
  family); a task without it (classification) writes no per-image file;
* optional, ``identity(images_uint8) -> outputs``: the degraded input as the task's
  output (the 'input' row, the restoration tables' reference); a task without it has no
  such row and its predictors take one fixed image size;
* optional attributes: ``extra_metrics`` (opt-in columns, restoration's 'niqe'),
  ``ensemble_ties`` (how the classification vote breaks ties), ``y_channel`` (scored
  on the luma: the super-resolution convention).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp


# The compute dtypes a task's model may take (``model.dtype``, ``restoration.dtype``).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def masked_sum(values, mask=None) -> tuple[jax.Array, jax.Array]:
  """``(sum of values where mask, int32 count of mask)`` over ``values`` ``[B]`` (booleans
  summed as int32) and bool ``mask`` ``[B]``: a task's ``scores`` pair for the
  unmasked (not padding) examples of a batch; all of them without a mask."""
  values = jnp.asarray(values)
  if values.dtype == jnp.bool_:
    values = values.astype(jnp.int32)
  if mask is None:
    return jnp.sum(values), jnp.int32(values.shape[0])
  return (jnp.sum(jnp.where(mask, values, jnp.zeros_like(values))),
          jnp.sum(jnp.asarray(mask).astype(jnp.int32)))


@dataclasses.dataclass(frozen=True)
class MetricSpec:
  """The task's headline metric.

  Attributes:
    name: short key, e.g. 'accuracy' or 'psnr'.
    label: what a table or axis calls it, e.g. 'Top-1 accuracy'.
    unit: the unit of the DISPLAYED value, e.g. '%' or 'dB'.
    scale: displayed value = ``scale * value`` (accuracy is stored 0..1, shown in %).
    higher_is_better: the direction model selection and greedy soups optimise.
    decimals: digits after the point in tables.
  """

  name: str
  label: str
  unit: str
  scale: float = 1.0
  higher_is_better: bool = True
  decimals: int = 1

  def display(self, value: float) -> float:
    return self.scale * float(value)

  def better(self, a: float, b: float | None) -> bool:
    """True when ``a`` beats ``b`` (anything beats None; NaN never wins)."""
    if b is None:
      return a == a
    return a > b if self.higher_is_better else a < b

  def signed(self, value):
    """``value`` (a number or an array) signed so that higher is better: itself, or its
    negative for a metric where lower is better (what greedy soups and EA-Adam's
    Pareto front maximise; EA-Adam's MOEA/D minimises ``-signed``)."""
    return value if self.higher_is_better else -value

  @property
  def heading(self) -> str:
    """``'Top-1 accuracy (%), higher is better'``."""
    return f"{self.label} ({self.unit}), {'higher' if self.higher_is_better else 'lower'} is better"


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What a model needs to know about the data: ``image_shape`` (H, W, 3) and, for
  classification, ``num_classes``."""

  image_shape: tuple[int, int, int]
  num_classes: int = 0


# degrade(key, images_uint8 [B,H,W,3]) -> uint8 [B,H,W,3]
DegradeFn = Callable[[jax.Array, jax.Array], jax.Array]


class Task(Protocol):
  """The interface every task implements (see the module docstring)."""

  name: str
  metric: MetricSpec
  metrics: tuple[MetricSpec, ...]
  base_on_all_tasks: bool
  row_labels: dict

  def load_data(self, config, seed: int): ...

  def build_model(self, config, data_spec: DataSpec) -> Any: ...

  def views(self, key, batch: dict, degrade: DegradeFn | None): ...

  def model_input(self, images) -> jax.Array: ...

  def forward(self, model, variables, images, train: bool = False): ...

  def predict(self, model, variables, images) -> jax.Array: ...

  def per_example_loss(self, outputs, target) -> jax.Array: ...

  def output_distance(self, outputs, teacher_outputs) -> jax.Array: ...

  def train_metrics(self, outputs, target) -> dict: ...

  def scores(self, outputs, batch: dict) -> dict: ...

  def ensemble(self, member_outputs) -> jax.Array: ...

  def moe_student(self, config, data_spec: DataSpec, k: int) -> Any: ...

  def moe_variables(self, model, fused_variables: dict, expert_variables: list,
                    key: jax.Array, image_shape: tuple[int, int, int]) -> dict: ...
