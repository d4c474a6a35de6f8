"""Inference cost of the mixture-of-experts student against the dense student.

``python -m fdjax.bench moe [--depth 20] [--batch 256] [--experts 4] [--repeats 5]
[--expert-loop auto|vmap|unroll] [--workdir RUN]``

For the dense CIFAR ResNet and the MoE student (last stage = ``--experts`` experts,
per-image routing) at K = 1 and 2, with dense dispatch (every expert computes every
image) and sparse dispatch (each image goes through its K chosen experts only: by
gathering each image's expert weights, or Switch-style per-expert buffers with
capacity factor 1.0, which drop images beyond an expert's capacity), it
prints: parameters, parameters active per image, XLA's inference FLOPs per image
(from the compiled program at batch 1) and measured images/s at ``--batch`` (median of
``--repeats``, the models taking turns), each relative to the dense student. Variables
are random (cost does not depend on them), with experts initialised from distinct
random dense models so that routing spreads.
With ``--workdir`` (a finished run with ``fusiondistill`` and ``fusiondistill_moe``):
that run's dense FusionDistill student and its trained MoE student instead (depth,
experts and image shape from the run; ``--depth``/``--experts`` ignored); inputs stay
random images, which route differently from real ones but cost the same.
"""

from __future__ import annotations

import json
import os
import statistics

import jax

from fdjax import moe
from fdjax.bench import host
from fdjax.bench.train_step import time_alternating
from fdjax.models import cifar_resnet
from fdjax.train.state import init_variables

IMAGE_SHAPE = (32, 32, 3)


def main(argv: list[str]) -> None:
  parser = host.parser("moe", __doc__)
  parser.add_argument("--depth", default="20",
                      help="CIFAR ResNet depth (6n+2) of the dense model and the student")
  parser.add_argument("--batch", type=int, default=256, help="images per call")
  parser.add_argument("--experts", type=int, default=4, help="the student's experts")
  parser.add_argument("--repeats", type=int, default=5,
                      help="timed repeats; the median is reported")
  parser.add_argument("--expert-loop", default="auto", choices=("auto", "vmap", "unroll"),
                      help="how the stacked experts run (auto: unroll on CPU, vmap elsewhere)")
  parser.add_argument("--workdir", default="",
                      help="a finished run: measure its FusionDistill and trained MoE students")
  args = parser.parse_args(argv)
  args.depth = host.resnet_depth(parser, "--depth", args.depth)
  host.at_least_one(parser, args, "batch", "experts", "repeats")
  load = host.load_average()   # at the start, as every bench: before its own load

  if args.workdir:
    dense, dense_vars, student, student_vars, image_shape = _trained(args.workdir)
    args.depth, args.experts = student.depth, student.num_experts
    student = student.clone(expert_loop=args.expert_loop)   # the flag, as for random ones
  else:
    image_shape = IMAGE_SHAPE
    dense = cifar_resnet(args.depth, 10, "reference")
    keys = jax.random.split(jax.random.key(0), args.experts + 2)
    dense_vars = init_variables(dense, keys[0], IMAGE_SHAPE)
    experts = [init_variables(dense, k, IMAGE_SHAPE) for k in keys[2:]]
    student = moe.moe_resnet(args.depth, 10, "reference", num_experts=args.experts, k=2,
                             expert_loop=args.expert_loop)
    student_vars = moe.moe_variables(student, dense_vars, experts, keys[1], IMAGE_SHAPE)
  images = jax.random.normal(jax.random.key(1), (args.batch, *image_shape))

  def runner(model, variables):
    """``run(calls)``: that many inferences on ``images``, blocking at the end."""
    predict = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])

    def run(calls: int) -> None:
      for _ in range(calls):
        out = predict(variables, images)
      jax.block_until_ready(out)

    return run

  models = [("dense ResNet-%d" % args.depth, dense, dense_vars, None)]
  for k in (1, 2):
    for label, dispatch, capacity in (("dense", "dense", None),
                                      ("sparse (gather)", "sparse", None),
                                      ("sparse (capacity 1.0)", "sparse", 1.0)):
      models.append((f"MoE K={k} {label}",
                     student.clone(k=k, dispatch=dispatch, capacity_factor=capacity),
                     student_vars, k))
  rows = [(name, moe.model_cost(lambda v, x, m=model: m.apply(v, x, train=False)[0], variables,
                                (1, *image_shape), args.experts if k else None, k))
          for name, model, variables, k in models]
  # The models take turns, repeat by repeat (as the other benchmarks' runners), so a change
  # of the machine's load reaches every row and its ratio to the dense row alike.
  times = time_alternating({name: runner(model, variables) for name, model, variables, _ in models},
                           steps=1, repeats=args.repeats, warmup=2)
  for name, cost in rows:
    cost["images_per_s"] = args.batch / statistics.median(times[name])

  base = rows[0][1]
  print(f"backend={jax.default_backend()} jax={jax.__version__} depth={args.depth} "
        f"batch={args.batch} experts={args.experts} expert_loop={args.expert_loop}"
        f"{host.loop_note(args.expert_loop)}"
        + (f" workdir={args.workdir}" if args.workdir else " (random variables)")
        + f"; {host.describe(load)}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(f"{'model':<30} {'params':>9} {'active':>9} {'MFLOPs/img':>11} {'rel':>5} "
        f"{'img/s':>8} {'rel':>5}")
  for name, c in rows:
    print(f"{name:<30} {c['params']:>9,} {c['active_params']:>9,} {c['flops'] / 1e6:>11.1f} "
          f"{c['flops'] / base['flops']:>5.2f} {c['images_per_s']:>8.0f} "
          f"{c['images_per_s'] / base['images_per_s']:>5.2f}")
  if any("capacity" in name for name, _ in rows):
    print("(capacity rows: FLOPs are counted at batch 1, where every expert's buffer holds "
          "the one image, so they count every expert; images/s is measured at --batch)")
  note = host.load_note(load, pinnable=False)
  if note:
    print(note)


def _trained(workdir: str):
  """(dense model, variables, MoE student, variables, image shape) of a finished run."""
  from fdjax.load import load_model

  dense = load_model(workdir, "fusiondistill")
  student = load_model(workdir, "fusiondistill_moe")
  with open(os.path.join(workdir, "run.json")) as f:
    shape = tuple(json.load(f)["image_shape"])
  return dense.model, dense.variables, student.model, student.variables, shape

