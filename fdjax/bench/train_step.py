"""Training throughput of the fdjax engine, and of the same ResNet in PyTorch.

``python -m fdjax.bench train_step [--depths 20,56] [--batch 128] [--steps 20]
[--repeats 5] [--warmup 3] [--dtypes float32,bfloat16] [--torch-threads N] [--cpus N]
[--no-torch]``

For each depth it times full training steps of ``fdjax.models.cifar_resnet``
through the real ``fdjax.train.make_train_step`` (forward, backward, SGD with
momentum 0.9 and weight decay 1e-4, BatchNorm in train mode, plain softmax
cross-entropy) on one on-device random batch of already-normalised float32
images ``[batch, 32, 32, 3]``, on the current JAX backend. Where ``torch`` is
importable the twin network of ``fdjax.bench.torch_resnet`` (NCHW, equal
parameter count, asserted) is timed the same way in the same process, and the
ratio fdjax / PyTorch is printed.

Each dtype of ``--dtypes`` (default both) is measured: ``bfloat16`` is fdjax's mixed
precision (``cifar_resnet(dtype=bfloat16)``: float32 parameters, optimiser state,
BatchNorm statistics, head and loss; bfloat16 convolutions and activations) and
PyTorch's CPU autocast to bfloat16. With several dtypes a last line per depth gives
each framework's images/s in bfloat16 over float32. All runners of one depth (both
frameworks, every dtype) are timed alternately, so load hits them alike.

Units: throughput in training images per second (``batch * steps / seconds``);
``--batch`` is images per step. After ``--warmup`` untimed steps (compilation
included for JAX), the two frameworks are timed alternately ``--repeats`` times
over ``--steps`` steps each and the median is reported, so that load from other
processes on a shared machine hits both alike. XLA flags are read from the
``XLA_FLAGS`` environment variable as usual; they are printed with the results.

On a shared machine, read the printed load average: PyTorch's OpenMP threads
slow down sharply when other processes compete for the cores (the restoration
U-Net's PyTorch step 40x at a load of 10 on 2 CPUs; BUILD_NOTES.md,
"Benchmarks"), XLA's thread pool much less, so a busy machine inflates the ratio.
``--cpus 1`` (the process is pinned to one CPU and torch uses one thread) gives
a per-core comparison that is far less sensitive to other load. Run as
``python -m fdjax.bench``, fdjax's XLA:CPU defaults apply (``fdjax.cpu_flags``:
convolutions in Eigen instead of YNNPACK, as in ``fdjax.main``);
``FDJAX_XLA_DEFAULTS=0`` times XLA's own defaults instead.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable, Hashable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fdjax.bench import host
from fdjax.config import optimizer_config
from fdjax.models import cifar_resnet
from fdjax.train.mesh import data_sharding, make_mesh
from fdjax.train.optim import make_optimizer
from fdjax.train.state import create_train_state, init_variables
from fdjax.train.step import make_train_step

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4


def param_count(params) -> int:
  """Number of scalars in a parameter pytree."""
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def fdjax_runner(depth: int, batch: int, dtype: str = "float32", seed: int = 0
                 ) -> tuple[Callable[[int], None], int]:
  """Returns ``(run, n_params)``; ``run(steps)`` does ``steps`` train steps and blocks."""
  model = cifar_resnet(depth, NUM_CLASSES, head="gap", dtype=jnp.dtype(dtype))

  def loss_fn(params, batch_stats, data, key):
    del key
    (logits, _), updates = model.apply({"params": params, "batch_stats": batch_stats},
                                       data["image"], train=True, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, data["label"]).mean()
    return loss, (updates["batch_stats"], {})

  mesh = make_mesh()
  tx, _ = make_optimizer(optimizer_config("sgd", LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                                          schedule="constant"), epochs=1, steps_per_epoch=1)
  variables = init_variables(model, jax.random.PRNGKey(seed), IMAGE_SHAPE)
  n_params = param_count(variables["params"])
  state = create_train_state(variables, tx, jax.random.PRNGKey(seed), mesh)
  k_img, k_lab = jax.random.split(jax.random.PRNGKey(seed + 1))
  data = {"image": jax.random.normal(k_img, (batch, *IMAGE_SHAPE), jnp.float32),
          "label": jax.random.randint(k_lab, (batch,), 0, NUM_CLASSES, jnp.int32)}
  return stepper(make_train_step(loss_fn, tx, mesh), state, data, mesh), n_params


def stepper(step, state, data, mesh):
  """``run(steps)``: ``steps`` calls of ``step`` on the same ``data``, carrying the state
  from call to call (and across runs), blocking until the last one is done. ``data`` is
  placed on ``mesh`` as the step takes it, once here: not resharded in every timed step."""
  holder, data = [state], jax.device_put(data, data_sharding(mesh))

  def run(steps: int) -> None:
    state = holder[0]
    for _ in range(steps):
      state, _ = step(state, data)
    jax.block_until_ready(state)
    holder[0] = state

  return run


def torch_runner(depth: int, batch: int, dtype: str = "float32", seed: int = 0
                 ) -> tuple[Callable[[int], None], int]:
  """The PyTorch twin of ``fdjax_runner`` (NCHW; bfloat16 via CPU autocast)."""
  import torch  # pylint: disable=import-outside-toplevel
  from fdjax.bench import torch_resnet  # pylint: disable=import-outside-toplevel

  torch.manual_seed(seed)
  model = torch_resnet.cifar_resnet(depth, NUM_CLASSES, head="gap").train()
  opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
  images = torch.randn(batch, IMAGE_SHAPE[2], *IMAGE_SHAPE[:2])
  labels = torch.randint(0, NUM_CLASSES, (batch,))
  autocast = dtype == "bfloat16"

  def run(steps: int) -> None:
    for _ in range(steps):
      opt.zero_grad(set_to_none=True)
      with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(images)
      loss = torch.nn.functional.cross_entropy(logits.float(), labels)
      loss.backward()
      opt.step()

  return run, torch_resnet.param_count(model)


def time_alternating(runners: dict[Hashable, Callable[[int], None]], steps: int, repeats: int,
                     warmup: int) -> dict[Hashable, list[float]]:
  """Seconds per ``steps`` steps of each runner, ``repeats`` times, runners interleaved."""
  for run in runners.values():
    run(warmup)
  times = {name: [] for name in runners}
  for _ in range(repeats):
    for name, run in runners.items():
      t0 = time.perf_counter()
      run(steps)
      times[name].append(time.perf_counter() - t0)
  return times


def _torch_available() -> bool:
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return False
  return True


def _parse(argv: list[str] | None) -> argparse.Namespace:
  p = host.parser("train_step", __doc__)
  p.add_argument("--depths", default="20,56", help="comma-separated ResNet depths (6n+2)")
  p.add_argument("--batch", type=int, default=128, help="images per training step")
  p.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
  p.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
  p.add_argument("--warmup", type=int, default=3,
                 help="untimed steps first (includes compile; at least 1)")
  p.add_argument("--dtypes", "--dtype", default="float32,bfloat16",
                 help="comma-separated compute dtypes, of float32 and bfloat16 (default both)")
  p.add_argument("--torch-threads", type=int, default=0,
                 help="torch intra-op threads; 0 = the CPUs this process may use")
  p.add_argument("--cpus", type=int, default=0,
                 help="pin this process to this many CPUs (and torch to as many threads); 0 = all. "
                      "Takes full effect on XLA only before JAX first runs in the process")
  p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
  args = p.parse_args(argv)
  args.depths = host.resnet_depths(p, "--depths", args.depths)
  host.at_least_one(p, args, "batch", "steps", "repeats")
  return args


DTYPES = ("float32", "bfloat16")


def parse_dtypes(text: str) -> list[str]:
  """``'float32,bfloat16'`` -> ``['float32', 'bfloat16']``, each one of ``DTYPES``."""
  dtypes = [d.strip() for d in text.split(",") if d.strip()]
  bad = [d for d in dtypes if d not in DTYPES]
  if bad or not dtypes:
    raise SystemExit(f"--dtypes must be a comma-separated subset of {','.join(DTYPES)}, "
                     f"got {text!r}")
  return dtypes


def main(argv: list[str] | None = None) -> dict[int, dict[str, dict[str, float]]]:
  """Runs the benchmark, prints one line per depth and dtype (and a bfloat16 / float32
  line per depth when both run); returns ``{depth: {dtype: {'fdjax'|'torch': images/s}}}``."""
  args = _parse(argv)
  if args.warmup < 1:
    raise SystemExit("--warmup must be >= 1: the first step compiles, and it is not to be timed")
  depths = args.depths
  dtypes = parse_dtypes(args.dtypes)
  use_torch = not args.no_torch and _torch_available()
  host.pin(args.cpus)
  cpus = host.cpus()
  load_before = host.load_average()
  header = (f"train_step: batch {args.batch}, {','.join(dtypes)}, {args.steps} steps x "
            f"{args.repeats} repeats (median); jax {jax.__version__} on {jax.default_backend()} "
            f"({jax.device_count()} device(s)), {host.describe(load_before)}; "
            f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  if use_torch:
    import torch  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(args.torch_threads or cpus)
    header += (f"; torch {torch.__version__} on cpu with {torch.get_num_threads()} threads"
               + ("" if jax.default_backend() == "cpu" else
                  f" (fdjax on {jax.default_backend()}: the ratio compares two devices)"))
  else:
    header += "; torch not importable (or --no-torch): fdjax only"
  print(header, flush=True)
  results = {}
  for depth in depths:
    runners, counts = {}, {}
    for dtype in dtypes:
      runners["fdjax", dtype], counts["fdjax"] = fdjax_runner(depth, args.batch, dtype)
      if use_torch:
        runners["torch", dtype], counts["torch"] = torch_runner(depth, args.batch, dtype)
    if use_torch:
      assert counts["torch"] == counts["fdjax"], (
          f"parameter counts differ for depth {depth}: fdjax {counts['fdjax']}, "
          f"torch {counts['torch']}")
    times = time_alternating(runners, args.steps, args.repeats, args.warmup)
    ips = {key: args.batch * args.steps / statistics.median(t) for key, t in times.items()}
    results[depth] = {dtype: {name: ips[name, dtype] for name, d in ips if d == dtype}
                      for dtype in dtypes}
    for dtype in dtypes:
      got = results[depth][dtype]
      line = (f"resnet-{depth} ({counts['fdjax']} params) batch {args.batch} {dtype}: "
              f"fdjax {got['fdjax']:.1f} images/s")
      if use_torch:
        line += (f" | torch {got['torch']:.1f} images/s | ratio fdjax/torch "
                 f"{got['fdjax'] / got['torch']:.2f}")
      print(line, flush=True)
    if len(dtypes) > 1:
      base, other = results[depth][dtypes[0]], results[depth][dtypes[1]]
      line = (f"resnet-{depth} {dtypes[1]} / {dtypes[0]} images/s: fdjax "
              f"{other['fdjax'] / base['fdjax']:.2f}x")
      if use_torch:
        line += f" | torch {other['torch'] / base['torch']:.2f}x"
      print(line, flush=True)
  note = host.load_note(load_before)
  if note:
    print(note, flush=True)
  return results
