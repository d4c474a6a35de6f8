"""``python -m fdjax.bench conv_grad``: the weight gradient of one 3x3 convolution,
computed three ways, on the current backend.

* ``xla``: what ``jax.vjp`` of ``lax.conv_general_dilated`` emits (XLA's transposed
  convolution, batch and channel roles swapped);
* ``shifted_gemms``: nine ``einsum('nhwc,nhwd->cd')`` products of the zero-padded,
  shifted input with the output gradient (no layout change: the form a custom VJP
  would use to keep NHWC);
* ``im2col``: one ``einsum`` over the nine shifts stacked.

Prints milliseconds per call (best of ``--repeats`` runs of ``--calls`` calls), each
other form's time over ``xla``'s (the peer: what JAX does by itself) and its largest
error relative to ``xla``'s result, for ResNet-56's three stage shapes
(batch ``--batch``, float32, NHWC). Pin it to one core with ``taskset -c 1`` to compare
with the one-core train-step figures.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
from jax import lax

from fdjax.bench import host

SHAPES = ((32, 16), (16, 32), (8, 64))   # (height = width, channels) of ResNet-56's stages


def conv(x, w):
  return lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def xla(x, w, dy):
  return jax.vjp(lambda w: conv(x, w), w)[1](dy)[0]


def _shifts(x):
  """The nine zero-padded shifts of NHWC ``x`` that a 3x3 'SAME' kernel sees."""
  h, w = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)]


def shifted_gemms(x, w, dy):
  grads = [jnp.einsum("nhwc,nhwd->cd", s, dy) for s in _shifts(x)]
  return jnp.stack(grads).reshape(3, 3, x.shape[-1], dy.shape[-1])


def im2col(x, w, dy):
  patches = jnp.stack(_shifts(x), axis=3)                        # [N, H, W, 9, C]
  return jnp.einsum("nhwkc,nhwd->kcd", patches, dy).reshape(3, 3, x.shape[-1], dy.shape[-1])


FORMS = {"xla": xla, "shifted_gemms": shifted_gemms, "im2col": im2col}


def _time(fn, args, calls: int, repeats: int) -> float:
  fn(*args).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      fn(*args).block_until_ready()
    best = min(best, (time.perf_counter() - start) / calls)
  return best


def main(argv: list[str]) -> None:
  parser = host.parser("conv_grad", __doc__)
  parser.add_argument("--batch", type=int, default=128, help="images per call")
  parser.add_argument("--calls", type=int, default=10, help="calls per timed repeat")
  parser.add_argument("--repeats", type=int, default=5,
                      help="timed repeats; the best is reported")
  args = parser.parse_args(argv)
  host.at_least_one(parser, args, "batch", "calls", "repeats")
  print(f"backend {jax.default_backend()}, batch {args.batch}, float32, NHWC, 3x3 'SAME', "
        f"{host.describe()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print("| H=W, C | " + " | ".join(FORMS) + " | time / xla's | max rel. error vs xla |")
  for size, channels in SHAPES:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (args.batch, size, size, channels))
    w = jax.random.normal(keys[1], (3, 3, channels, channels))
    dy = jax.random.normal(keys[2], (args.batch, size, size, channels))
    jitted = {name: jax.jit(fn) for name, fn in FORMS.items()}
    reference = jitted["xla"](x, w, dy)
    millis = [1e3 * _time(fn, (x, w, dy), args.calls, args.repeats) for fn in jitted.values()]
    errors = [float(jnp.abs(jitted[n](x, w, dy) - reference).max() / jnp.abs(reference).max())
              for n in FORMS if n != "xla"]
    ratios = [m / millis[0] for m in millis[1:]]   # the other forms against XLA's own
    print(f"| {size}, {channels} | " + " | ".join(f"{m:.1f} ms" for m in millis)
          + " | " + ", ".join(f"{r:.2f}" for r in ratios)
          + " | " + ", ".join(f"{e:.1e}" for e in errors) + " |")
