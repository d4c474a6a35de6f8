"""``materialize(x)``: an identity that makes XLA:CPU keep ``x`` in memory.

XLA's CPU fusion pass treats elementwise producers as free to duplicate, so a consumer
that reads a residual-stream activation ``x_k = relu(x_{k-1} + bn(conv(...)))`` may fuse
the whole chain back to the start of the stage and recompute it, instead of reading the
``x_k`` already in memory. In a ResNet's backward pass every weight-gradient convolution
transposes its input activation (NHWC -> CHWN, the layout XLA:CPU's convolution wants for
a weight gradient) and each of those transposes became such a fusion: with ``n`` blocks a
stage, the work grows as ``n**2``. On ResNet-56 (9 blocks a stage) these transposes were
59% of a float32 train step (BUILD_NOTES.md, "Train step vs PyTorch").

``lax.optimization_barrier`` does not stop it: XLA:CPU expands barriers before fusion.
A value that crosses a ``lax.cond`` boundary cannot be fused into the other side, so
``materialize`` passes ``x`` through a ``cond`` whose two branches both return ``x``
unchanged: one is the identity, the other multiplies by one (exact in IEEE arithmetic,
NaNs and signed zeros included), because XLA merges two identical branches and then
drops the ``cond``. The predicate is read at run time from an array (``x``, or a
replicated ``anchor`` such as a parameter, which a batch-sharded step can read without
a collective) so that it cannot be folded away.
``tests/test_materialize.py`` checks the compiled CPU program, so a future XLA that sees
through this fails a test rather than silently slowing the step down again.

On other backends ``materialize`` returns ``x`` itself: a GPU conditional reads its
predicate on the host, and the recomputation was found (and measured) on XLA:CPU only.
Under ``vmap`` the ``cond`` of a batched predicate (e.g. a population's stacked
parameters) becomes a ``select`` of two equal values: no cut, the same values.

The values, gradients and shapes are exactly those of ``x``: only where XLA keeps the
array changes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def materialize(x: jax.Array, anchor: jax.Array | None = None,
                backend: str | None = None) -> jax.Array:
  """``x`` unchanged (any shape and dtype), kept in memory by XLA:CPU.

  anchor: a non-empty array whose first element sets the ``cond``'s predicate (default
  ``x``). Under a sharded batch pass a replicated one (a parameter): a predicate read
  from a batch-sharded ``x`` costs an all-reduce per call. ``backend``: the platform
  the program is compiled for (default ``jax.default_backend()`` at trace time);
  anything but ``'cpu'`` returns ``x`` as is.
  """
  anchor = x if anchor is None else anchor
  if (backend or jax.default_backend()) != "cpu" or x.size == 0 or anchor.size == 0:
    return x
  pred = jnp.signbit(anchor.reshape(-1)[0])
  return lax.cond(pred, _identity, _times_one, x)


def _identity(x):
  return x


def _times_one(x):
  return x * jnp.ones((), x.dtype)
