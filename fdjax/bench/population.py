"""Population step throughput: P members in ONE jitted step vs P sequential single-model steps.

``python -m fdjax.bench population [--depth 8] [--batch 32] [--size 5] [--objectives 2]
[--repeats 5] [--member-loop auto|vmap|unroll]``

Both sides run EA-Adam's update (per-objective gradients, per-tensor normalised and
combined with preference weights, Adam) of a CIFAR ResNet on random 32x32 images,
``--objectives`` shares of ``--batch`` images per step (no degradation: the cost
measured is the step's). The population step trains ``--size`` stacked members at
once (``fdjax.population.gradients.population_grad_fn``); the baseline runs one compiled
single-model step once per member (the same program for every member, their
preference weights differing only in value). Prints member-images/s (images x members
per second) for both, after one warm-up call each (compilation excluded), same
backend, same run.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fdjax.bench import host
from fdjax.bench.train_step import time_alternating
from fdjax.models import cifar_resnet
from fdjax.population.gradients import member_grad_fn, population_grad_fn
from fdjax.population.objectives import share_losses
from fdjax.population.preferences import preference_vectors
from fdjax.population.state import create_population_state, stack_members
from fdjax.tasks.classification import ClassificationTask
from fdjax.train import (create_train_state, data_sharding, init_variables, make_mesh,
                         make_train_step)

IMAGE_SHAPE = (32, 32, 3)


def main(argv: list[str]) -> dict:
  parser = host.parser("population", __doc__)
  parser.add_argument("--depth", default="8", help="the members' CIFAR ResNet depth (6n+2)")
  parser.add_argument("--batch", type=int, default=32, help="images per objective share")
  parser.add_argument("--size", type=int, default=5, help="members P")
  parser.add_argument("--objectives", type=int, default=2,
                      help="objectives (shares of a step's batch)")
  parser.add_argument("--repeats", type=int, default=5,
                      help="timed repeats; the median is reported")
  parser.add_argument("--member-loop", default="auto", choices=("auto", "vmap", "unroll"),
                      help="how the members run (auto: unroll on CPU, vmap elsewhere)")
  args = parser.parse_args(argv)
  args.depth = host.resnet_depth(parser, "--depth", args.depth)
  host.at_least_one(parser, args, "batch", "size", "objectives", "repeats")
  load = host.load_average()   # at the start, as every bench: before its own load

  model, task = cifar_resnet(args.depth, 10, "reference"), ClassificationTask()
  mesh = make_mesh()
  members = [init_variables(model, jax.random.key(i), IMAGE_SHAPE) for i in range(args.size)]
  preferences = preference_vectors(args.size, args.objectives)
  loss_fn = share_losses(model, task, lambda key, images: images, args.objectives)
  tx = optax.adam(1e-3)
  rng = np.random.default_rng(0)
  images = args.objectives * args.batch
  batch = {"image": jnp.asarray(rng.integers(0, 256, (images, *IMAGE_SHAPE)), jnp.uint8),
           "label": jnp.asarray(rng.integers(0, 10, images), jnp.int32)}
  batch = jax.device_put(batch, data_sharding(mesh))   # as the step takes it: placed once

  population = [create_population_state(stack_members(members), tx, jax.random.PRNGKey(0), None,
                                        mesh)]
  population_step = make_train_step(loss_fn, tx, mesh, grad_fn=population_grad_fn(
      preferences, loop=args.member_loop))

  def run_population(steps: int):
    for _ in range(steps):
      population[0], metrics = population_step(population[0], batch)
    jax.block_until_ready(metrics["loss"])

  singles = [create_train_state(m, tx, jax.random.PRNGKey(0), mesh) for m in members]
  single_step = make_train_step(loss_fn, tx, mesh, grad_fn=member_grad_fn(args.objectives,
                                                                          preferences[1]))

  def run_sequential(steps: int):
    for _ in range(steps):
      for i in range(args.size):
        singles[i], _ = single_step(singles[i], batch)
    jax.block_until_ready(singles)   # every member's step, not only the last one's

  # One untimed call each (compilation), then the two alternate, so a change of the
  # machine's load reaches both alike; the median of the repeats.
  sequential = f"{args.size} sequential steps"
  times = time_alternating({"population (one step)": run_population,
                            sequential: run_sequential}, steps=1, repeats=args.repeats,
                           warmup=1)
  seconds = {name: float(np.median(t)) for name, t in times.items()}
  work = images * args.size
  print(f"backend {jax.default_backend()}, ResNet-{args.depth}, P={args.size}, "
        f"{args.objectives} objectives x {args.batch} images, member loop {args.member_loop}"
        f"{host.loop_note(args.member_loop)}, {host.describe(load)}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  rates = {}
  for name, s in seconds.items():
    rates[name] = work / s
    print(f"  {name:<26} {s * 1e3:9.1f} ms/step  {rates[name]:9.1f} member-images/s")
  print(f"  ratio population / sequential: "
        f"{rates['population (one step)'] / rates[sequential]:.2f}x (the sequential steps "
        f"are the peer; --member-loop changes only the population's)")
  note = host.load_note(load, pinnable=False)
  if note:
    print(note, flush=True)
  return rates

