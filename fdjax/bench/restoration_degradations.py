"""Speed of fdjax's restoration degradations, and of their per-image convolution, on the
current JAX backend.

``python -m fdjax.bench restoration_degradations [--batch 3] [--size 192]
[--names rain,motion_blur,haze,denoise,lowlight] [--patch 48] [--repeats 5] [--seconds 1.0]``

1. Degradations: for each of ``--names`` it times ``jax.jit(fdjax.degradations.apply_float)``
   on one batch of ``--batch`` float32 images ``[B, S, S, 3]`` in 0..1 (``S = --size``;
   synthetic smooth colour gradients plus noise, ``fdjax.bench.degradations.synthetic_images``
   / 255), one level per image drawn uniformly from the degradation's grid without its
   clean level; compiled and warmed up first, every call blocked on. Units: **images/s**
   and **ms per batch**.
2. The per-image convolution ``fdjax.degradations.restoration._convolve_per_image`` (jit; a
   scan over kernel rows of shifted copies) in the two shapes the degradations use:
   rain, a streak-seed map ``[B, S, S, 1]`` with an 11x11 line kernel per image, zero
   padding; motion blur, the images ``[B, S, S, 3]`` with a normalised 17x17 line kernel
   per image (length 1..15), edge padding. Against two peers on the same inputs:
   ``lax``, the form it replaced (``jax.vmap`` of a depthwise
   ``jax.lax.conv_general_dilated``, NHWC/HWIO, ``feature_group_count=C``, precision
   HIGHEST, kernel flipped so it is a true convolution; 'SAME', or 'VALID' after edge
   padding; jit), and ``scipy``, ``scipy.ndimage.convolve`` per image and channel on numpy
   (mode 'constant' / 'nearest'; one core, where the two JAX forms use XLA's threads).
   Units: **ms per batch**; ``peer/fdjax`` is the peer's time over fdjax's (> 1: fdjax
   is faster). Each peer's output must match fdjax's to max |difference| < 1e-4
   (printed).
3. Training views (``fdjax.tasks.restoration_views.training_views``, jit): a batch of
   ``--batch`` uint8 tiles ``[B, S, S, 3]`` flipped and rotated, degraded with each of
   ``--names`` and cut to ``--patch`` patches with the dark-channel cue
   (``restoration.image_prior``) of the whole degraded tile (``prior_context='tile'``),
   against the peer ``patch cue``: the patch cut first, then degraded, its cue its own
   (``'patch'``). Units: **ms per batch**; ``peer/fdjax`` < 1: the tile context costs more.

Every figure is the median of ``--repeats`` timed runs of at least ``--seconds`` each
(``fdjax.bench.degradations.time_calls``). Within a repeat the degradations are timed one
after another, and fdjax and its peers alternately, so load from other processes hits
all alike; the 1-minute load average, the CPU model and the JAX backend are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fdjax import degradations
from fdjax.bench import host
from fdjax.bench.degradations import print_table, synthetic_images, time_calls
from fdjax.degradations.registry import sample_from_grid
from fdjax.degradations.restoration import _convolve_per_image, _line_kernels

DEFAULT_NAMES = ("rain", "motion_blur", "haze", "denoise", "lowlight")
# (row name, channels, kernel size, padding): the shapes rain and motion blur convolve.
CONV_SHAPES = (("conv rain", 1, 11, "zero"), ("conv motion_blur", 3, 17, "edge"))
TOLERANCE = 1e-4


def lax_convolve(images: jax.Array, kernels: jax.Array, padding: str) -> jax.Array:
  """The former form: ``vmap`` over images of a depthwise ``conv_general_dilated``."""
  size, channels = kernels.shape[-1], images.shape[-1]
  r = size // 2
  if padding == "edge":
    images = jnp.pad(images, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
  mode = "VALID" if padding == "edge" else "SAME"

  def one(image, kernel):
    rhs = jnp.tile(kernel[::-1, ::-1][:, :, None, None], (1, 1, 1, channels))
    return jax.lax.conv_general_dilated(
        image[None], rhs, (1, 1), mode, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels, precision=jax.lax.Precision.HIGHEST)[0]

  return jax.vmap(one)(images, kernels)


def scipy_convolve(images: np.ndarray, kernels: np.ndarray, padding: str) -> np.ndarray:
  """``scipy.ndimage.convolve`` per image and channel (numpy in, numpy out)."""
  from scipy import ndimage  # pylint: disable=import-outside-toplevel
  mode = {"zero": "constant", "edge": "nearest"}[padding]
  out = np.empty_like(images)
  for b in range(images.shape[0]):
    for c in range(images.shape[-1]):
      out[b, ..., c] = ndimage.convolve(images[b, ..., c], kernels[b], mode=mode, cval=0.0)
  return out


def conv_inputs(key: jax.Array, batch: int, size: int, channels: int, kernel_size: int,
                images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """float32 inputs ``[B, S, S, C]`` and kernels ``[B, K, K]`` as rain / motion blur make them."""
  seed_key, brightness_key, angle_key, length_key = jax.random.split(key, 4)
  if channels == 1:  # rain: sparse seeds of light, 9-pixel streaks within 22.5 deg of vertical
    seeds = jax.random.uniform(seed_key, (batch, size, size, 1)) < 0.03
    x = seeds * jax.random.uniform(brightness_key, seeds.shape, minval=0.15, maxval=0.4)
    angle = jax.random.uniform(angle_key, (batch,), minval=-np.pi / 8, maxval=np.pi / 8)
    return x, _line_kernels(angle, jnp.full((batch,), 9.0), kernel_size)
  angle = jax.random.uniform(angle_key, (batch,), minval=0.0, maxval=np.pi)
  length = jax.random.randint(length_key, (batch,), 1, 16).astype(jnp.float32)
  kernels = _line_kernels(angle, length, kernel_size)
  return images, kernels / jnp.sum(kernels, axis=(1, 2), keepdims=True)


def _views_rows(args, names, key, results) -> list[tuple[str, ...]]:
  """Section 3: ``training_views`` of a batch of uint8 tiles for each degradation, with
  the dark-channel cue taken from the patch (the peer) or from the whole tile."""
  from fdjax.tasks.restoration_views import training_views  # pylint: disable=import-outside-toplevel
  tiles = jnp.asarray(synthetic_images(args.batch, args.seed + 1, size=args.size))
  rows = []
  for index, name in enumerate(names):
    level_key, view_key = jax.random.split(jax.random.fold_in(key, 2000 + index))
    levels = sampled_levels(name, level_key, args.batch)
    degrade = lambda k, x, name=name, lv=levels: degradations.apply(name, k, x, lv)
    fns = {}
    for context in ("tile", "patch"):
      views = jax.jit(lambda k, tiles, context=context, degrade=degrade: training_views(
          k, {"image": tiles}, degrade, patch=args.patch, flip=True, rot90=True,
          prior="dark_channel", prior_context=context)[0])
      fns[context] = lambda views=views: jax.block_until_ready(views(view_key, tiles))
      fns[context]()  # compile + warm up
    ms = median_ms(fns, args.repeats, args.seconds)
    row = f"views {name}"
    results[row] = {"ms": ms["tile"], "images_per_s": 1000.0 * args.batch / ms["tile"],
                    "patch_ms": ms["patch"], "patch_ratio": ms["patch"] / ms["tile"]}
    rows.append((row, f"[{args.batch}, {args.size}, {args.size}, 3] -> {args.patch} tile cue",
                 f"{ms['tile']:.3f}", f"{results[row]['images_per_s']:,.1f}", "patch cue",
                 f"{ms['patch']:.3f}", f"{ms['patch'] / ms['tile']:.2f}x", "-"))
    print(f"  {row}: tile cue {ms['tile']:.3f}, patch cue {ms['patch']:.3f} ms/batch "
          f"(load {host.load_averages()})", flush=True)
  return rows


def median_ms(fns: dict[str, Callable[[], object]], repeats: int,
              seconds: float) -> dict[str, float]:
  """Median ms per call of each of ``fns`` (each blocks on its result) over ``repeats``
  rounds of >= ``seconds`` each; within a round the calls take turns, so load from other
  processes hits all alike."""
  times: dict[str, list[float]] = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      times[name].append(1000.0 / time_calls(fn, seconds))
  return {name: statistics.median(t) for name, t in times.items()}


def sampled_levels(name: str, key: jax.Array, batch: int) -> jax.Array:
  """``[batch]`` levels drawn uniformly from ``name``'s grid without its clean level."""
  grid = degradations.levels(name)
  return sample_from_grid(grid[grid != degradations.clean_level(name)], key, batch)


def _parse(argv: list[str] | None) -> argparse.Namespace:
  p = host.parser("restoration_degradations", __doc__)
  p.add_argument("--batch", type=int, default=3, help="images per call")
  p.add_argument("--size", type=int, default=192, help="image height and width, pixels")
  p.add_argument("--names", default=",".join(DEFAULT_NAMES),
                 help="comma-separated degradation names")
  p.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
  p.add_argument("--seconds", type=float, default=1.0, help="minimum seconds per timed repeat")
  p.add_argument("--patch", type=int, default=48,
                 help="training patch side of the views section (0: skip that section)")
  p.add_argument("--seed", type=int, default=0, help="of the images and the levels")
  args = p.parse_args(argv)
  host.at_least_one(p, args, "batch", "size", "repeats")
  args.names = host.names_in(p, "--names", args.names, sorted(degradations.REGISTRY))
  if args.patch > args.size:   # checked before the first sections run, not after them
    p.error(f"--patch {args.patch} is larger than the {args.size}x{args.size} images; "
            f"lower it (0 skips the views section)")
  return args


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
  """Runs the benchmark and prints a markdown table; returns ``{row: {figure: value}}``
  (degradations: ``ms``, ``images_per_s``; convolutions: ``ms`` and, per peer,
  ``<peer>_ms``, ``<peer>_ratio``, ``<peer>_max_abs_diff``)."""
  args = _parse(argv)
  names = args.names
  device = jax.devices()[0]
  print(f"restoration_degradations: batch {args.batch} float32 images "
        f"[{args.batch}, {args.size}, {args.size}, 3], {args.repeats} repeats (median) of "
        f">= {args.seconds:g} s; jax {jax.__version__} on {jax.default_backend()} "
        f"({device.device_kind}, {jax.device_count()} device(s)); {host.describe()}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
  print(f"peers: scipy one image at a time on one core; fdjax and lax on XLA's thread pool "
        f"over the {host.cpus()} CPU(s)", flush=True)
  print(f"load average at start: {host.load_averages()}", flush=True)

  images = jnp.asarray(synthetic_images(args.batch, args.seed, size=args.size),
                       jnp.float32) / 255.0
  key = jax.random.key(args.seed)
  apply_jit = jax.jit(degradations.apply_float, static_argnums=0)
  calls = {}
  for index, name in enumerate(names):
    level_key, apply_key = jax.random.split(jax.random.fold_in(key, index))
    levels = sampled_levels(name, level_key, args.batch)
    calls[name] = (lambda name=name, k=apply_key, lv=levels:
                   jax.block_until_ready(apply_jit(name, k, images, lv)))
    calls[name]()  # compile + warm up
  medians = median_ms(calls, args.repeats, args.seconds)
  results: dict[str, dict[str, float]] = {}
  rows = []
  for name in names:
    ms = medians[name]
    results[name] = {"ms": ms, "images_per_s": 1000.0 * args.batch / ms}
    rows.append((name, f"[{args.batch}, {args.size}, {args.size}, 3]", f"{ms:.3f}",
                 f"{results[name]['images_per_s']:,.1f}", "-", "-", "-", "-"))
    print(f"  {name}: {ms:.3f} ms/batch (load {host.load_averages()})", flush=True)

  fdjax_jit = jax.jit(_convolve_per_image, static_argnames="padding")
  lax_jit = jax.jit(lax_convolve, static_argnames="padding")
  for index, (row, channels, ksize, padding) in enumerate(CONV_SHAPES):
    x, kernels = conv_inputs(jax.random.fold_in(key, 1000 + index), args.batch, args.size,
                             channels, ksize, images)
    x_host, kernels_host = np.asarray(x, np.float32), np.asarray(kernels, np.float32)
    fns = {
        "fdjax": lambda x=x, k=kernels, p=padding: jax.block_until_ready(fdjax_jit(x, k, p)),
        "lax": lambda x=x, k=kernels, p=padding: jax.block_until_ready(lax_jit(x, k, p)),
        "scipy": lambda x=x_host, k=kernels_host, p=padding: scipy_convolve(x, k, p),
    }
    outs = {peer: np.asarray(fn()) for peer, fn in fns.items()}  # compile + warm up
    shape = f"[{args.batch}, {args.size}, {args.size}, {channels}] K={ksize} {padding}"
    ms = median_ms(fns, args.repeats, args.seconds)
    results[row] = {"ms": ms["fdjax"], "images_per_s": 1000.0 * args.batch / ms["fdjax"]}
    for peer in ("lax", "scipy"):
      diff = float(np.max(np.abs(outs[peer].astype(np.float64) - outs["fdjax"])))
      if not diff < TOLERANCE:  # also catches NaN
        raise AssertionError(f"{row}: {peer} differs from fdjax by {diff:g} >= {TOLERANCE:g}")
      ratio = ms[peer] / ms["fdjax"]
      results[row].update({f"{peer}_ms": ms[peer], f"{peer}_ratio": ratio,
                           f"{peer}_max_abs_diff": diff})
      rows.append((row, shape, f"{ms['fdjax']:.3f}", f"{results[row]['images_per_s']:,.1f}",
                   peer, f"{ms[peer]:.3f}", f"{ratio:.2f}x", f"{diff:.1e}"))
    print(f"  {row}: fdjax {ms['fdjax']:.3f}, lax {ms['lax']:.3f}, scipy {ms['scipy']:.3f} "
          f"ms/batch (load {host.load_averages()})", flush=True)

  if args.patch:
    rows += _views_rows(args, names, key, results)

  print_table(("measured", "shape", "fdjax ms/batch", "fdjax img/s", "peer", "peer ms/batch",
               "peer/fdjax", "max abs diff"), rows)
  print(f"load average at end: {host.load_averages()}", flush=True)
  return results
