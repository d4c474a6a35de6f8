"""bfloat16 compute mode (``config.model.dtype='bfloat16'``, ``restoration.dtype``) for
every model: the CIFAR ResNet, the MoE ResNet student, the U-Net and NAFNet.

What bfloat16 must mean (checked here): parameters, their gradients, the optimiser
state and BatchNorm statistics float32; convolutions and the activations between them
bfloat16; BatchNorm / LayerNorm arithmetic, the losses (cross-entropy, L1,
distillation cosine), softmaxes, the MoE router, its gating and balance loss, heads
and metrics float32.

Kept fast: dtypes come from ``jax.eval_shape`` and from the traced (not compiled)
gradient jaxpr; variables from ``random_variables`` (abstract init plus numpy); only
the loss comparisons and the short digits run compile.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdjax.data.digits import upscale
from fdjax.distill import fusiondistill_loss
from fdjax.models import NAFNet, UNet, cifar_resnet
from fdjax.moe.model import moe_resnet
from fdjax.tasks import NO_AUGMENT, ClassificationTask
from fdjax.tasks.restoration import RestorationTask
from fdjax.train import create_train_state, make_mesh, make_train_step
from fdjax.train.objectives import supervised_loss
from fdjax.trees import stack_trees
from random_weights import random_variables

SHAPE = (16, 16, 3)
BATCH = 32
F32, BF16 = jnp.float32, jnp.bfloat16
CLASSIFY = ClassificationTask("unit", NO_AUGMENT)
RESTORE = RestorationTask(patch=None, flip=False, rot90=False)
TRANSCENDENTAL = {"exp", "log", "log1p", "expm1", "rsqrt", "sqrt", "logistic", "erf", "erfc",
                  "tanh"}
NORM_SCOPE = re.compile(r"^(BatchNorm_\d+|stem_norm|shortcut_norm|norm\d)$")
# Relative tolerance of a bfloat16 loss against the float32 loss, same params and batch.
# bfloat16 keeps 8 significant bits: every rounding is off by at most 2**-9 = 0.2%. These
# nets round each convolution's input and output (<= 10 convolutions on any path); the
# errors are independent, so they grow like sqrt(10) * 0.2% = 0.6% on the activations at
# worst-case alignment of signs only, and the losses (cross-entropy near ln 10, L1)
# change by less than the relative change of the outputs. 1% is that bound with margin;
# measured: 0.01-0.07%.
LOSS_RTOL = 1e-2


def digits(n=BATCH, offset=0):
  """uint8 ``[n, 16, 16, 3]`` digits (scikit-learn's bundled scans) and int32 labels."""
  from sklearn.datasets import load_digits
  d = load_digits()
  sl = slice(offset, offset + n)
  return {"image": jnp.asarray(upscale(d.images[sl], SHAPE[0])),
          "label": jnp.asarray(d.target[sl].astype(np.int32))}


def add_noise(key, images):
  """Gaussian noise, std 25 grey levels: uint8 -> uint8 (the restorers' degradation)."""
  noisy = images.astype(jnp.float32) + 25.0 * jax.random.normal(key, images.shape)
  return jnp.clip(jnp.round(noisy), 0, 255).astype(jnp.uint8)


def build(name, dtype, noisy_router=False):
  """``(model, loss_fn, frozen)`` of each model in ``dtype`` with its stage's loss."""
  if name == "resnet":
    model = cifar_resnet(8, 10, head="reference", dtype=dtype)
    return model, supervised_loss(model, CLASSIFY, add_noise), None
  if name == "moe":   # FusionDistill-MoE: 2 experts, channel sharing, every router option
    model = moe_resnet(8, 10, head="reference", num_experts=2, k=1 if noisy_router else 2,
                       channel_sharing=True, noisy_gating=noisy_router, dtype=dtype)
    teacher = cifar_resnet(8, 10, head="reference", dtype=dtype)
    frozen = stack_trees([random_variables(teacher, seed, SHAPE) for seed in (7, 8)])
    loss = fusiondistill_loss(model, CLASSIFY, degrade=add_noise, num_experts=2,
                              teacher_model=teacher, aux_loss_weight=1e-2, router_weight=0.1,
                              rng_streams=("gating",) if noisy_router else ())
    return model, loss, frozen
  model = {"unet": UNet, "nafnet": NAFNet}[name](width=8, depth=1, dtype=dtype)
  return model, supervised_loss(model, RESTORE, add_noise), None


MODELS = ("resnet", "moe", "unet", "nafnet")
ACTIVATIONS = {"resnet": ("stem", "stage1", "stage2", "stage3"),
               "moe": ("stem", "stage1", "stage2", "stage3"),
               "unet": ("encoder1", "bottleneck", "decoder1"),
               "nafnet": ("encoder1", "bottleneck", "decoder1")}
FLOAT32_FEATURES = {"resnet": ("pooled",),
                    "moe": ("pooled", "router", "router_logits", "aux_loss",
                            "channel_gate_stage3"),
                    "unet": (), "nafnet": ()}


def loss_args(name, model, frozen, key=jax.random.PRNGKey(3)):
  variables = random_variables(model, 0, SHAPE)
  return (variables["params"], variables["batch_stats"], digits(), key,
          *(() if frozen is None else (frozen,)))


def all_eqns(jaxpr):
  """Every equation of ``jaxpr`` and of the jaxprs nested in it (jit, vmap, scan, vjp)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else (param,):
        if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
          yield from all_eqns(sub.jaxpr)
        elif hasattr(sub, "eqns"):
          yield from all_eqns(sub)


def dtypes(tree):
  return {str(x.dtype) for x in jax.tree.leaves(tree)}


@pytest.mark.parametrize("name", MODELS)
def test_bfloat16_step_keeps_state_float32_and_computes_convolutions_in_bfloat16(name):
  model, loss_fn, frozen = build(name, BF16, noisy_router=True)
  args = loss_args(name, model, frozen)
  tx = optax.sgd(0.1, momentum=0.9)
  state = create_train_state({"params": args[0], "batch_stats": args[1]}, tx,
                             jax.random.PRNGKey(0))
  step = make_train_step(loss_fn, tx, make_mesh())
  new_state, metrics = jax.eval_shape(step, state, args[2], frozen)   # traced, not compiled
  assert dtypes(new_state.params) == dtypes(new_state.opt_state) == {"float32"}
  assert dtypes(new_state.batch_stats) <= {"float32"}
  assert metrics["loss"].dtype == F32
  (_, _), grads = jax.eval_shape(jax.value_and_grad(loss_fn, has_aux=True), *args)
  assert dtypes(grads) == {"float32"}
  # Activations bfloat16; heads, router, gates and the image output float32.
  rngs = {"gating": jax.random.PRNGKey(1)}
  outputs, features = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs=rngs)[0],
      {"params": args[0], "batch_stats": args[1]}, jnp.zeros((BATCH, *SHAPE), F32))
  assert outputs.dtype == F32
  assert {k: str(features[k].dtype) for k in ACTIVATIONS[name]} == dict.fromkeys(
      ACTIVATIONS[name], "bfloat16")
  assert {k: str(features[k].dtype) for k in FLOAT32_FEATURES[name]} == dict.fromkeys(
      FLOAT32_FEATURES[name], "float32")
  # The gradient's program: every convolution (forward and backward) in bfloat16 but the
  # router's; every exp/log/rsqrt/erf/sigmoid, and all arithmetic inside every norm layer
  # (statistics, normalisation, scale, bias and their gradients), in float32: all but
  # the casts and the sum of the two cotangents of the bfloat16 input (add_any).
  jaxpr = jax.make_jaxpr(lambda *a: jax.grad(lambda *b: loss_fn(*b)[0])(*a))(*args)
  eqns = list(all_eqns(jaxpr.jaxpr))
  convs = [e for e in eqns if e.primitive.name == "conv_general_dilated"]
  router = lambda e: "/router" in str(e.source_info.name_stack)
  assert len(convs) >= 12
  assert {str(v.aval.dtype) for e in convs if not router(e) for v in e.invars} == {"bfloat16"}
  assert {str(v.aval.dtype) for e in convs if router(e) for v in e.invars} <= {"float32"}
  assert len([e for e in convs if router(e)]) == (3 if name == "moe" else 0)
  math = [e for e in eqns if e.primitive.name in TRANSCENDENTAL]
  assert math and {str(v.aval.dtype) for e in math for v in e.invars} == {"float32"}
  in_norm = [e for e in eqns if e.primitive.name not in ("convert_element_type", "add_any")
             and any(NORM_SCOPE.match(s) for s in str(e.source_info.name_stack).split("/"))]
  assert len(in_norm) >= (0 if name == "unet" else 20)   # the plain U-Net has no norm layer
  assert {str(v.aval.dtype) for e in in_norm for v in e.outvars
          if jnp.issubdtype(v.aval.dtype, jnp.floating)} <= {"float32"}


@pytest.mark.parametrize("name", MODELS)
def test_float32_mode_has_no_bfloat16_anywhere(name):
  model, loss_fn, frozen = build(name, F32, noisy_router=True)
  args = loss_args(name, model, frozen)
  jaxpr = jax.make_jaxpr(lambda *a: jax.grad(lambda *b: loss_fn(*b)[0])(*a))(*args)
  found = {str(v.aval.dtype) for e in all_eqns(jaxpr.jaxpr) for v in (*e.invars, *e.outvars)
           if hasattr(v.aval, "dtype") and jnp.issubdtype(v.aval.dtype, jnp.floating)}
  assert found == {"float32"}


@functools.lru_cache(maxsize=None)
def _jitted_loss(name, dtype):
  model, loss_fn, frozen = build(name, dtype)
  return jax.jit(lambda *a: loss_fn(*a)[0]), model, frozen


@pytest.mark.parametrize("name", ["moe", "unet", "nafnet"])   # resnet: in the training test
def test_bfloat16_loss_is_within_tolerance_of_float32(name):
  losses = {}
  for dtype in (F32, BF16):
    fn, model, frozen = _jitted_loss(name, dtype)
    losses[dtype] = float(fn(*loss_args(name, model, frozen)))
  assert np.isfinite(losses[F32]) and losses[F32] > 0
  # Not equal (bfloat16 really is used) and close (LOSS_RTOL's reasoning).
  assert 0 < abs(losses[BF16] - losses[F32]) <= LOSS_RTOL * losses[F32], losses


def test_bfloat16_training_on_digits_tracks_float32():
  """ResNet-8 (the quickstart's network), 16 SGD steps on digits: the first step's loss
  and gradient match float32's, and the loss falls as far as float32's does."""
  tx = optax.sgd(0.05, momentum=0.9)
  batches = [digits(BATCH, BATCH * i) for i in range(16)]
  curves, first_grads = {}, {}
  for dtype in (F32, BF16):
    model, loss_fn, _ = build("resnet", dtype)
    state = create_train_state(random_variables(model, 0, SHAPE), tx, jax.random.PRNGKey(0))
    step = make_train_step(loss_fn, tx, make_mesh())
    losses = []
    for i, batch in enumerate(batches):
      state, metrics = step(state, batch)
      losses.append(float(metrics["loss"]))
      if i == 0:   # momentum starts at 0: after one step its trace is the gradient
        first_grads[dtype] = np.concatenate([np.ravel(g) for g in
                                             jax.tree.leaves(state.opt_state[0].trace)])
    assert dtypes(state.params) == dtypes(state.opt_state) == dtypes(state.batch_stats) == {
        "float32"}
    curves[dtype] = np.asarray(losses)
  f32, bf16 = curves[F32], curves[BF16]
  assert 0 < abs(bf16[0] - f32[0]) <= LOSS_RTOL * f32[0]
  g32, g16 = first_grads[F32], first_grads[BF16]
  assert g32 @ g16 / (np.linalg.norm(g32) * np.linalg.norm(g16)) > 0.98
  # Both learn (last 4 steps' mean loss under 60% of the first), bfloat16 within 15% of
  # float32 at the end (different rounding makes the two runs drift apart step by step).
  assert f32[-4:].mean() < 0.6 * f32[0] and bf16[-4:].mean() < 0.6 * bf16[0], curves
  assert abs(bf16[-4:].mean() - f32[-4:].mean()) <= 0.15 * f32[-4:].mean(), curves
