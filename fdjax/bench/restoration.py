"""Training and inference speed of the restoration variants on the current backend.

``python -m fdjax.bench restoration [--variants unet,nafnet,promptir,measnet,moe]
[--width 16] [--depth 2] [--patch 64] [--batch 8] [--steps 3] [--repeats 3] [--warmup 1]
[--infer-size 256] [--infer-batch 1] [--experts 3] [--moe-stages decoder1] [--k 2]
[--dtype float32] [--torch] [--cpus N]``

Each variant is built the way a study builds it (``RestorationTask.build_model`` from
``config.restoration``; ``moe`` is FusionDistill-MoE's U-Net student,
``fdjax.moe.unet_student.restoration_student``, over the plain U-Net with ``--experts``
experts, ``--moe-stages`` routed per pixel, top-``--k``) with random weights, and timed:

* training: full steps of the real ``fdjax.train.make_train_step`` (forward, backward,
  RAdam) on one fixed on-device batch of ``--batch`` float patches ``--patch`` x
  ``--patch`` with an L1 loss (plus the model's ``regularizer``; the MoE student's
  balance loss x 1e-4); throughput in **patches/s** (``batch * steps / seconds``, median
  over ``--repeats`` after ``--warmup`` untimed steps, compilation included there). The
  MoE student's own step only: FusionDistill-MoE's step also runs the frozen teachers.
* inference: the jitted forward pass on ``--infer-batch`` images of ``--infer-size``
  squared; throughput in **megapixels/s** (``fdjax.moe.images_per_second`` x pixels).

``--torch`` (needs PyTorch; every row): the same network in PyTorch
(``fdjax.bench.torch_unet``, NCHW, with ``fdjax.bench.torch_nafnet``'s NAFNet block for
``nafnet``, ``fdjax.bench.torch_promptir``'s prompt blocks for ``promptir`` and
``fdjax.bench.torch_moe``'s routed blocks for ``measnet`` and ``moe``;
``torch.optim.RAdam``, L1 plus the same weighted balance loss for ``measnet`` and ``moe``
(two differences of cost only: under ``--dtype bfloat16`` autocast runs the twins'
routers in bfloat16, where fdjax's run in float32; at inference the twins still compute
the balance loss, which fdjax's jitted forward pass drops), one thread per CPU of the
process; on the GPU when JAX runs on one and PyTorch sees it; all in
``fdjax.bench.restoration_peers``) on the same batch, timed alternately with fdjax's
step, and its forward pass on the inference images (``torch.no_grad``, eval mode); the
line adds its patches/s and megapixels/s and fdjax's ratio to each. Its parameter count
and routing options are checked against fdjax's model first (the two must be the same
network). ``--cpus N`` pins the process to N CPUs (PyTorch then uses N threads): under
load a multi-threaded PyTorch step slows far more than XLA's (40x at a load of 10 on 2
CPUs), and ``--cpus 1`` keeps the ratio meaningful.

The header names the backend, its devices and the CPU model (``fdjax.bench.host``), the
load average and ``XLA_FLAGS`` (``python -m fdjax.bench`` sets fdjax's XLA:CPU defaults,
``fdjax.cpu_flags``; ``FDJAX_XLA_DEFAULTS=0`` keeps XLA's own): on a shared machine the
figures are indicative only.
"""

from __future__ import annotations

import argparse
import os
import statistics

import jax
import jax.numpy as jnp
import ml_collections

from fdjax import moe
from fdjax.bench import host
from fdjax.bench import restoration_peers as peers
from fdjax.bench.restoration_peers import BALANCE_WEIGHT, LR, WEIGHT_DECAY
from fdjax.bench.train_step import stepper, time_alternating
from fdjax.config import base_config, optimizer_config
from fdjax.moe.unet_student import restoration_student
from fdjax.tasks import DataSpec, RestorationTask
from fdjax.train.mesh import make_mesh
from fdjax.train.objectives import with_regularizer
from fdjax.train.optim import make_optimizer
from fdjax.train.state import create_train_state, init_variables
from fdjax.train.step import make_train_step

VARIANTS = ("unet", "nafnet", "promptir", "measnet", "moe")


def build(variant: str, args: argparse.Namespace):
  """The variant's module, as a study's config builds it."""
  config = base_config()
  config.task = "restoration"
  config.restoration = ml_collections.ConfigDict(
      {"model": "unet" if variant == "moe" else variant, "width": args.width,
       "depth": args.depth, "dtype": args.dtype})
  if variant == "moe":
    config.degradations = ",".join(f"task{i}" for i in range(args.experts))
    config.moe.update({"stages": args.moe_stages, "routing": "pixel"})
    return restoration_student(config, args.k)
  task = RestorationTask.from_config(config)
  return task.build_model(config, DataSpec((args.patch, args.patch, 3)))


def train_runner(model, variables, args):
  """``run(steps)``: that many training steps on one fixed batch, blocking at the end."""

  def loss_fn(params, batch_stats, data, key):
    del key
    (out, features), updates = model.apply({"params": params, "batch_stats": batch_stats},
                                           data["image"], train=True, mutable=["batch_stats"])
    loss = with_regularizer(jnp.mean(jnp.abs(out - data["target"])), features)
    if "aux_loss" in features and "regularizer" not in features:
      loss = loss + BALANCE_WEIGHT * features["aux_loss"]
    return loss, (updates.get("batch_stats", {}), {})

  mesh = make_mesh()
  tx, _ = make_optimizer(optimizer_config("radam", LR, weight_decay=WEIGHT_DECAY,
                                          schedule="constant"), epochs=1, steps_per_epoch=1)
  state = create_train_state(variables, tx, jax.random.PRNGKey(0), mesh)
  k_in, k_target = jax.random.split(jax.random.key(1))
  shape = (args.batch, args.patch, args.patch, 3)
  data = {"image": jax.random.uniform(k_in, shape), "target": jax.random.uniform(k_target, shape)}
  return stepper(make_train_step(loss_fn, tx, mesh), state, data, mesh)


def measure(variant: str, args) -> dict:
  """``{'params', 'patches_per_s', 'megapixels_per_s'}`` of one variant (and
  ``'torch_patches_per_s'``, ``'torch_megapixels_per_s'`` with ``--torch``)."""
  model = build(variant, args)
  # Random weights (speed does not depend on them); rbg keys and one jitted init compile
  # far faster on CPU than threefry's, op by op.
  variables = jax.jit(lambda key: init_variables(model, key, (args.patch, args.patch, 3)))(
      jax.random.key(0, impl="rbg"))
  params = moe.param_count(variables)
  images = jax.random.uniform(jax.random.key(2), (args.infer_batch, args.infer_size,
                                                  args.infer_size, 3))
  predict = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  ips = moe.images_per_second(predict, variables, images, warmup=1, repeats=args.repeats)
  runners = {"fdjax": train_runner(model, variables, args)}   # donates (deletes) variables
  if args.torch:
    runners["torch"] = peers.torch_train_runner(variant, model, args, params)
  times = time_alternating(runners, args.steps, args.repeats, args.warmup)
  rate = {name: args.batch * args.steps / statistics.median(t) for name, t in times.items()}
  result = {"params": params, "patches_per_s": rate["fdjax"],
            "megapixels_per_s": ips * args.infer_size ** 2 / 1e6}
  if "torch" in rate:
    result["torch_patches_per_s"] = rate["torch"]
    result["torch_megapixels_per_s"] = (peers.torch_inference_rate(variant, model, args)
                                        * args.infer_size ** 2 / 1e6)
  return result


def _parse(argv):
  p = host.parser("restoration", __doc__)
  p.add_argument("--variants", default=",".join(VARIANTS),
                 help=f"comma-separated, from {','.join(VARIANTS)}")
  p.add_argument("--width", type=int, default=16, help="the U-Nets' channels at full resolution")
  p.add_argument("--depth", type=int, default=2, help="the U-Nets' down-samplings")
  p.add_argument("--patch", type=int, default=64, help="training patch side")
  p.add_argument("--batch", type=int, default=8, help="patches per training step")
  p.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
  p.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
  p.add_argument("--warmup", type=int, default=1,
                 help="untimed steps first (with compilation; at least 1)")
  p.add_argument("--infer-size", type=int, default=256, help="inference image side")
  p.add_argument("--infer-batch", type=int, default=1, help="images per inference call")
  p.add_argument("--experts", type=int, default=3, help="MoE student: experts (tasks)")
  p.add_argument("--moe-stages", default="decoder1", help="MoE student: routed U-Net levels")
  p.add_argument("--k", type=int, default=2, help="MoE student: top-K")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="compute dtype (parameters stay float32)")
  p.add_argument("--torch", action="store_true",
                 help="also time each variant's PyTorch twin (needs torch)")
  p.add_argument("--cpus", type=int, default=0,
                 help="pin this process to this many CPUs (and PyTorch to as many threads); "
                      "0 = all")
  args = p.parse_args(argv)
  if args.warmup < 1:
    p.error("--warmup must be >= 1: the first step compiles, and it is not to be timed")
  host.at_least_one(p, args, "width", "batch", "steps", "repeats", "infer_batch")
  stride = 2 ** args.depth   # the U-Nets run on multiples of it (no padding here)
  for name in ("patch", "infer_size"):
    if getattr(args, name) < stride or getattr(args, name) % stride:
      p.error(f"--{name.replace('_', '-')} must be a multiple of the U-Net's stride "
              f"{stride} (2**--depth), got {getattr(args, name)}")
  args.variants = host.names_in(p, "--variants", args.variants, VARIANTS)
  return args


def main(argv: list[str] | None = None) -> dict[str, dict]:
  """Prints a header and one line per variant; returns ``{variant: measure(...)}``."""
  args = _parse(argv)
  host.pin(args.cpus)   # before JAX first runs: XLA's thread pool sized to the pinned CPUs
  load = host.load_average()
  device = jax.devices()[0]
  print(f"restoration: width {args.width}, depth {args.depth}, {args.dtype}; training "
        f"{args.batch} patches {args.patch}x{args.patch} x {args.steps} steps x "
        f"{args.repeats} repeats (median); inference {args.infer_batch} x "
        f"{args.infer_size}x{args.infer_size}; jax {jax.__version__} on "
        f"{jax.default_backend()} ({jax.device_count()} x {device.device_kind}); "
        f"{host.describe(load)}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
  if args.torch:
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise SystemExit("error: --torch needs PyTorch (pip install torch), which this "
                       "environment cannot import") from None

    torch.set_num_threads(host.cpus())
    print(f"PyTorch {torch.__version__} on {peers.torch_device()}, {args.dtype}"
          f"{' (autocast)' if args.dtype == 'bfloat16' else ''}, with "
          f"{torch.get_num_threads()} threads", flush=True)
  results = {}
  for variant in args.variants:
    r = measure(variant, args)
    label = (f"moe ({args.experts} experts, {args.moe_stages}, K={args.k})"
             if variant == "moe" else variant)
    peer = (f"  (PyTorch {r['torch_patches_per_s']:.1f} patches/s: "
            f"{r['patches_per_s'] / r['torch_patches_per_s']:.2f}x)"
            if "torch_patches_per_s" in r else "")
    infer_peer = (f"  (PyTorch {r['torch_megapixels_per_s']:.2f} megapixels/s: "
                  f"{r['megapixels_per_s'] / r['torch_megapixels_per_s']:.2f}x)"
                  if "torch_megapixels_per_s" in r else "")
    print(f"{label:<36} {r['params']:>9,} params  train {r['patches_per_s']:8.1f} patches/s"
          f"{peer}  inference {r['megapixels_per_s']:7.2f} megapixels/s{infer_peer}",
          flush=True)
    results[variant] = r
  note = host.load_note(load)
  if note:
    print(note, flush=True)
  return results
