"""bfloat16 compute mode (``config.model.dtype='bfloat16'``, ``restoration.dtype``) for
every model: the CIFAR ResNet, the MoE ResNet student, the U-Net and NAFNet (dtypes,
loss tolerance; the ResNet also trains on digits), and PromptIR, MEASNet and the routed
U-Net student (dtypes only).

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
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdjax.data.digits import upscale
from fdjax.distill import fusiondistill_loss
from fdjax.models import MEASNet, NAFNet, PromptIR, UNet, cifar_resnet
from fdjax.moe.model import moe_resnet
from fdjax.moe.unet_student import RoutedUNet
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
# Relative tolerance of a bfloat16 step's loss against the float32 step's (same params,
# batch and key). bfloat16 keeps 8 significant bits: each rounding moves a value by at most
# 2**-9 = 0.2%. On any path from the input to the loss these nets round about 10 times
# (the input and each convolution's operands and output: ResNet-8 has 7-9 convolutions
# on a path, the one-block U-Nets 4-5); independent errors add like a random walk,
# sqrt(10) * 0.2% = 0.6% on the outputs, and the loss, a mean over images and pixels,
# averages them further. 1% is that bound with margin. Measured (jax 0.10.2, CPU):
# ResNet-8 0.025%, MoE 0.005%, U-Net 0.14%, NAFNet 0.15%.
LOSS_RTOL = 1e-2


@functools.lru_cache(maxsize=1)
def _digits():
  from sklearn.datasets import load_digits
  d = load_digits()
  return upscale(d.images[:BATCH * 16], SHAPE[0]), d.target[:BATCH * 16].astype(np.int32)


def digits(n=BATCH, offset=0):
  """uint8 ``[n, 16, 16, 3]`` digits (scikit-learn's bundled 8x8 scans, upscaled) and
  int32 labels, from ``offset`` on (at most 512 images)."""
  images, labels = _digits()
  return {"image": jnp.asarray(images[offset:offset + n]),
          "label": jnp.asarray(labels[offset:offset + n])}


def low_contrast(key, images):
  """The degradation of these tests: contrast halved around grey, uint8 -> uint8.
  Deterministic (no random-number code to compile: a noise degradation costs ~1 s of
  compilation per program)."""
  del key
  return images // 2 + 64


def build(name, dtype, all_options=False):
  """``(model, loss_fn, frozen)`` of each model in ``dtype`` with its stage's loss;
  ``all_options``: the MoE student with noisy top-1 gating and channel sharing too
  (traced only: top-1 choices may flip between dtypes, so no loss comparison)."""
  if name == "resnet":
    model = cifar_resnet(8, 10, head="reference", dtype=dtype)
    return model, supervised_loss(model, CLASSIFY, low_contrast), None
  if name == "moe":   # FusionDistill-MoE, 2 experts, balance loss, router supervision
    model = moe_resnet(8, 10, head="reference", num_experts=2, k=1 if all_options else 2,
                       channel_sharing=all_options, noisy_gating=all_options, dtype=dtype)
    teacher = cifar_resnet(8, 10, head="reference", dtype=dtype)
    frozen = stack_trees([random_variables(teacher, seed, SHAPE) for seed in (7, 8)])
    loss = fusiondistill_loss(model, CLASSIFY, degrade=low_contrast, num_experts=2,
                              teacher_model=teacher, aux_loss_weight=1e-2, router_weight=0.1,
                              rng_streams=("gating",) if all_options else ())
    return model, loss, frozen
  one_block = dict(width=8, depth=1, blocks=0, middle_blocks=1, dtype=dtype)   # cheap
  if name == "measnet":   # one routed decoder block
    model = MEASNet(**{**one_block, "decoder_blocks": 1}, num_experts=2, k=1,
                    channel_sharing=True)
  elif name == "routed_unet":   # the restoration MoE student, routed middle block
    model = RoutedUNet(**one_block, base="nafnet", num_experts=2, k=1, routed=("middle",),
                       channel_sharing=True)
  else:
    model = {"unet": UNet, "nafnet": NAFNet, "promptir": PromptIR}[name](**one_block)
  return model, supervised_loss(model, RESTORE, low_contrast), None


MODELS = ("resnet", "moe", "unet", "nafnet", "promptir", "measnet", "routed_unet")
ROUTED = ("moe", "measnet", "routed_unet")   # with a (float32) prompt router
RESTORER_ACTIVATIONS = ("encoder1", "bottleneck", "decoder1")
ACTIVATIONS = {"resnet": ("stem", "stage1", "stage2", "stage3"),
               "moe": ("stem", "stage1", "stage2", "stage3")}
FLOAT32_FEATURES = {"resnet": ("pooled",),
                    "moe": ("pooled", "router", "router_logits", "aux_loss",
                            "channel_gate_stage3")}


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
  model, loss_fn, frozen = build(name, BF16, all_options=True)
  args = loss_args(name, model, frozen)
  # The gradient's program, traced (not compiled), and the shapes it returns.
  jaxpr, ((loss, (batch_stats, _)), grads) = jax.make_jaxpr(
      jax.value_and_grad(loss_fn, has_aux=True), return_shape=True)(*args)
  assert loss.dtype == F32
  assert dtypes(grads) == dtypes(args[0]) == {"float32"}
  assert dtypes(batch_stats) <= {"float32"}
  tx = optax.sgd(0.1, momentum=0.9)
  updates, opt_state = jax.eval_shape(tx.update, grads, tx.init(args[0]), args[0])
  assert dtypes(updates) == dtypes(opt_state) == {"float32"}
  # Activations bfloat16; heads, router, gates and the image output float32.
  rngs = {"gating": jax.random.PRNGKey(1)}
  outputs, features = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"], rngs=rngs)[0],
      {"params": args[0], "batch_stats": args[1]}, jnp.zeros((BATCH, *SHAPE), F32))
  assert outputs.dtype == F32
  bf16_names = ACTIVATIONS.get(name, RESTORER_ACTIVATIONS)
  f32_names = FLOAT32_FEATURES.get(name, ())
  assert {k: str(features[k].dtype) for k in bf16_names} == dict.fromkeys(bf16_names,
                                                                          "bfloat16")
  assert {k: str(features[k].dtype) for k in f32_names} == dict.fromkeys(f32_names, "float32")
  # In the gradient's program every convolution (forward and backward) is bfloat16 but the
  # router's; every exp/log/rsqrt/erf/sigmoid, and all arithmetic inside every norm layer
  # (statistics, normalisation, scale, bias and their gradients), is float32: all but
  # the casts and the sum of the two cotangents of the bfloat16 input (add_any).
  eqns = list(all_eqns(jaxpr.jaxpr))
  convs = [e for e in eqns if e.primitive.name == "conv_general_dilated"]
  router = lambda e: "/router" in str(e.source_info.name_stack)
  assert len(convs) >= 12
  assert {str(v.aval.dtype) for e in convs if not router(e) for v in e.invars} == {"bfloat16"}
  assert {str(v.aval.dtype) for e in convs if router(e) for v in e.invars} <= {"float32"}
  assert bool([e for e in convs if router(e)]) == (name in ROUTED)
  math = [e for e in eqns if e.primitive.name in TRANSCENDENTAL]
  assert math and {str(v.aval.dtype) for e in math for v in e.invars} == {"float32"}
  in_norm = [e for e in eqns if e.primitive.name not in ("convert_element_type", "add_any")
             and any(NORM_SCOPE.match(s) for s in str(e.source_info.name_stack).split("/"))]
  # The plain U-Net and its prompt / mixture variants have no norm layer.
  assert len(in_norm) >= (0 if name in ("unet", "promptir", "measnet") else 20)
  assert {str(v.aval.dtype) for e in in_norm for v in e.outvars
          if jnp.issubdtype(v.aval.dtype, jnp.floating)} <= {"float32"}


@pytest.mark.parametrize("name", ["moe", "nafnet"])   # their blocks are the others' too
def test_float32_mode_has_no_bfloat16_anywhere(name):
  model, loss_fn, frozen = build(name, F32, all_options=True)
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
    mesh = make_mesh()
    state = create_train_state(random_variables(model, 0, SHAPE), tx, jax.random.PRNGKey(0),
                               mesh)   # placed as the step returns it: one compilation
    step = make_train_step(loss_fn, tx, mesh)
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
  # Both learn: the mean loss of the last 8 steps (the same batches for both) is under
  # half the first; bfloat16's drop is at least 80% of float32's (the runs drift apart
  # step by step as their roundings differ; measured: 97%, 0.65 vs 0.59 from 2.55).
  end32, end16 = f32[-8:].mean(), bf16[-8:].mean()
  assert end32 < 0.5 * f32[0] and end16 < 0.5 * bf16[0], curves
  assert bf16[0] - end16 >= 0.8 * (f32[0] - end32), curves


def test_train_step_bench_reports_both_dtypes_side_by_side(monkeypatch, capsys):
  """The benchmark's bookkeeping, with the runners and the clock replaced (no compile):
  images/s = batch * steps / median seconds, and bfloat16 over float32 per framework."""
  from fdjax.bench import train_step
  seconds = {("fdjax", "float32"): [2.0, 4.0, 3.0], ("fdjax", "bfloat16"): [1.0, 2.0, 1.5],
             ("torch", "float32"): [1.0, 1.0, 1.0], ("torch", "bfloat16"): [0.5, 0.5, 0.5]}
  monkeypatch.setattr(train_step, "fdjax_runner", lambda depth, batch, dtype: (None, 270))
  monkeypatch.setattr(train_step, "torch_runner", lambda depth, batch, dtype: (None, 270))
  monkeypatch.setattr(train_step, "_torch_available", lambda: True)
  monkeypatch.setattr(train_step, "time_alternating",
                      lambda runners, steps, repeats, warmup: {k: seconds[k] for k in runners})
  monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(
      __version__="fake", set_num_threads=lambda n: None, get_num_threads=lambda: 1))
  got = train_step.main(["--depths", "8", "--batch", "10", "--steps", "3", "--repeats", "3"])
  # medians 3.0 / 1.5 / 1.0 / 0.5 s for 30 images
  assert got == {8: {"float32": {"fdjax": 10.0, "torch": 30.0},
                     "bfloat16": {"fdjax": 20.0, "torch": 60.0}}}
  out = capsys.readouterr().out
  assert "resnet-8 (270 params) batch 10 float32: fdjax 10.0 images/s | torch 30.0" in out
  assert "resnet-8 (270 params) batch 10 bfloat16: fdjax 20.0 images/s | torch 60.0" in out
  assert "resnet-8 bfloat16 / float32 images/s: fdjax 2.00x | torch 2.00x" in out
  with pytest.raises(SystemExit, match="--dtypes"):
    train_step.main(["--dtypes", "float16"])
