"""Throughput of fdjax's on-device degradations against the paper's CPU pipeline.

``python -m fdjax.bench degradations [--batch 1024] [--repeats 5]
[--names jpeg,blur,awgn,sapn] [--source auto|synthetic|folder:PATH] [--seconds 1.0]``

For each degradation it times ``fdjax.degradations.apply`` (jit, compiled and warmed
up first) on one batch of ``--batch`` CIFAR-sized uint8 images ``[B, 32, 32, 3]`` with a
different level per image, drawn uniformly from the degradation's grid
(``sample_levels``), and blocks on the result. In the same process it times the
reference pipeline as the paper's code calls it, one image at a time on the CPU
(imagedegrade 0.2.3 over PIL, scipy and numpy), on the same images and levels:

| name | reference call (per image x, uint8 [32, 32, 3]) |
|---|---|
| jpeg | ``np.asarray(imagedegrade.im.jpeg(Image.fromarray(x), q))``: PIL save + open; Q 101: x |
| blur | ``np.uint8(imagedegrade.np.blur(x, s))`` = ``gaussian_filter(x, [s, s, 0], ...)`` |
| awgn | ``np.uint8(imagedegrade.np.noise(x, sigma).clip(0, 255))`` |
| sapn | ``np.uint8(imagedegrade.np.saltpepper(x, p).clip(0, 255))`` (the paper's call) |

Without imagedegrade the same PIL / scipy / numpy calls are made directly.

Units: images per second, each the median of ``--repeats`` timed runs of at least
``--seconds``: fdjax repeats the ``apply`` call on the batch (each call blocked on),
the reference cycles over the same images and levels one at a time. The two are timed
alternately, so load from other processes hits both alike; the 1-minute load average
is printed. For JPEG and blur (deterministic) the share of output values
equal to the reference's is printed too (fdjax is meant to be bit-exact there).

Images (``--source``): ``auto`` (default) reads CIFAR-10 *test* images straight from
``<repo>/../shared/data/cifar10-jpeg.tar.gz`` into memory when that archive exists,
else makes synthetic ones (smooth colour gradients plus noise); ``folder:PATH`` reads
a folder or a .tar/.tar.gz of images (resized to 32x32 when they are not).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tarfile
import time
from pathlib import Path
from typing import Callable

import jax
import numpy as np
from PIL import Image

from fdjax import degradations
from fdjax.bench import host
from fdjax.errors import UserError

IMAGE_SIZE = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")
CIFAR_ARCHIVE = (Path(__file__).resolve().parents[2].parent / "shared" / "data"
                 / "cifar10-jpeg.tar.gz")

Reference = Callable[[np.ndarray, float], np.ndarray]


# ---------------------------------------------------------------- images
def synthetic_images(n: int, seed: int = 0, size: int = IMAGE_SIZE) -> np.ndarray:
  """uint8 ``[n, size, size, 3]``: random smooth colour gradients plus mild noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:size, :size] / (size - 1)
  # Per image and channel: a linear ramp, one sinusoid and an offset.
  offset = rng.uniform(30, 220, (n, 1, 1, 3))
  ramp = rng.uniform(-80, 80, (n, 1, 1, 3, 2))
  freq = rng.uniform(0.5, 3.0, (n, 1, 1, 3, 2))
  amp = rng.uniform(0, 40, (n, 1, 1, 3))
  grid = np.stack([yy, xx], -1)[None, :, :, None, :]  # [1, size, size, 1, 2]
  image = (offset + np.sum(ramp * (grid - 0.5), -1)
           + amp * np.sin(2 * np.pi * np.sum(freq * grid, -1)))
  image = image + rng.normal(0, 6, image.shape)
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _decode(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
      image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return np.asarray(image)


def _archive_images(path: Path) -> tuple[list[bytes], str]:
  """Encoded image files of a .tar(.gz), the ``test`` split only where there is one."""
  by_split: dict[str, list[tuple[str, bytes]]] = {}
  with tarfile.open(path, "r:*") as archive:
    for member in archive:
      if not member.isfile() or not member.name.lower().endswith(IMAGE_SUFFIXES):
        continue
      parts = Path(member.name).parts
      split = "test" if "test" in parts[:-1] else "other"
      by_split.setdefault(split, []).append((member.name, archive.extractfile(member).read()))
  split = "test" if "test" in by_split else "other"
  files = sorted(by_split.get(split, []))
  return [data for _, data in files], ("test split" if split == "test" else "all images")


def load_images(source: str, n: int, seed: int = 0) -> tuple[np.ndarray, str]:
  """uint8 ``[n, 32, 32, 3]`` and a description of where they came from.

  source: 'auto', 'synthetic' or 'folder:PATH' (a folder or a .tar/.tar.gz). From files,
  ``n`` images are chosen at random without replacement (repeated when there are fewer).
  """
  if source == "auto":
    if not CIFAR_ARCHIVE.is_file():
      return synthetic_images(n, seed), f"synthetic (no {CIFAR_ARCHIVE})"
    source = f"folder:{CIFAR_ARCHIVE}"
  if source == "synthetic":
    return synthetic_images(n, seed), "synthetic (smooth gradients + noise)"
  if not source.startswith("folder:"):
    raise UserError(f"unknown source {source!r}; use auto, synthetic or folder:PATH")
  path = Path(source.removeprefix("folder:"))
  if path.is_dir():
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    encoded, what = [p.read_bytes() for p in files], "all images"
  elif path.is_file():
    encoded, what = _archive_images(path)
  else:
    raise UserError(f"--source {source}: {path} is neither a folder nor an archive")
  if not encoded:
    raise UserError(f"--source {source}: no image files ({', '.join(IMAGE_SUFFIXES)}) in "
                    f"{path}")
  rng = np.random.default_rng(seed)
  pick = rng.permutation(len(encoded))[:n]
  images = np.stack([_decode(encoded[i]) for i in pick])
  images = np.resize(images, (n, *images.shape[1:]))  # repeats when there are too few
  return images, f"{path} ({what}: {len(pick)} of {len(encoded)} images)"


# ---------------------------------------------------------------- reference pipeline
def reference_functions() -> tuple[dict[str, Reference], str]:
  """Per-image reference degradations ``f(uint8 [H, W, 3], level) -> uint8`` and their origin."""
  try:
    import imagedegrade.im as degrade_im  # pylint: disable=import-outside-toplevel
    import imagedegrade.np as degrade_np  # pylint: disable=import-outside-toplevel
  except ImportError:
    degrade_im = degrade_np = None
  from scipy import ndimage  # pylint: disable=import-outside-toplevel

  def jpeg(x, quality):
    if quality >= 101:  # the paper's "no compression" level
      return x
    if degrade_im is not None:
      return np.asarray(degrade_im.jpeg(Image.fromarray(x), jpeg_quality=int(quality)))
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer))

  def blur(x, sigma):
    if degrade_np is not None:
      return np.uint8(degrade_np.blur(x, sigma))
    return np.uint8(ndimage.gaussian_filter(x, sigma=[sigma, sigma, 0], truncate=3.0,
                                            mode="nearest"))

  def awgn(x, sigma):
    noisy = degrade_np.noise(x, sigma) if degrade_np is not None else (
        x + np.random.normal(0.0, sigma, x.shape))
    return np.uint8(noisy.clip(0, 255))

  def sapn(x, p):
    if degrade_np is not None:
      return np.uint8(degrade_np.saltpepper(x, p).clip(0, 255))
    out = x
    mask = np.random.binomial(1, p / 2, x.shape)
    out = mask * 0 + (1 - mask) * out
    mask = np.random.binomial(1, p / 2, x.shape)
    out = mask * 1 + (1 - mask) * out  # the paper's default intensity range (0, 1)
    return np.uint8(out.clip(0, 255))

  origin = ("imagedegrade 0.2.3 (PIL / scipy / numpy)" if degrade_np is not None
            else "PIL / scipy / numpy called directly (imagedegrade not importable)")
  return {"jpeg": jpeg, "blur": blur, "awgn": awgn, "sapn": sapn}, origin


def reference_levels(name: str, levels: np.ndarray) -> list[float]:
  """The float32 grid levels as the paper's Python values (randint(0, 50) / 10, ...)."""
  if name == "jpeg":
    return [int(round(q)) for q in levels]
  if name == "awgn":
    return [float(round(s)) for s in levels]
  scale = {"blur": 10, "sapn": 100}[name]
  return [round(float(v) * scale) / scale for v in levels]


def time_calls(fn: Callable[[], object], min_seconds: float) -> float:
  """Calls per second of ``fn()`` (which blocks on its result), over >= ``min_seconds``."""
  calls, start = 0, time.perf_counter()
  while True:
    fn()
    calls += 1
    elapsed = time.perf_counter() - start
    if elapsed >= min_seconds:
      return calls / elapsed


def time_reference(fn: Reference, images: np.ndarray, levels: list[float],
                   min_seconds: float) -> float:
  """Images per second of ``fn`` cycling over (images, levels) for >= ``min_seconds``."""
  n, done = len(images), 0
  start = time.perf_counter()
  while True:
    for _ in range(64):  # look at the clock every 64 images
      i = done % n
      fn(images[i], levels[i])
      done += 1
    elapsed = time.perf_counter() - start
    if elapsed >= min_seconds:
      return done / elapsed


# ---------------------------------------------------------------- benchmark
def _parse(argv: list[str] | None, references) -> argparse.Namespace:
  """The flags; ``references``: the names that have a reference pipeline (``--names``
  must be among them)."""
  p = host.parser("degradations", __doc__)
  p.add_argument("--batch", type=int, default=1024, help="images per fdjax call")
  p.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
  p.add_argument("--names", default=",".join(degradations.NAMES),
                 help="comma-separated degradation names")
  p.add_argument("--source", default="auto", help="auto | synthetic | folder:PATH")
  p.add_argument("--seconds", type=float, default=1.0,
                 help="minimum seconds per timed repeat (fdjax and reference alike)")
  p.add_argument("--seed", type=int, default=0, help="of the images picked and the levels")
  args = p.parse_args(argv)
  host.at_least_one(p, args, "batch", "repeats")
  # a typo fails here, before any image loads (each name needs a reference pipeline)
  args.names = host.names_in(p, "--names", args.names, sorted(references))
  if args.source not in ("auto", "synthetic") and not args.source.startswith("folder:"):
    p.error(f"--source {args.source!r}: use auto, synthetic or folder:PATH")
  return args


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
  """Prints ``rows`` under ``header`` as a markdown table with padded columns."""
  widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
  line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
  print(line(header))
  print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
  for row in rows:
    print(line(row))


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
  """Runs the benchmark and prints a table; returns ``{name: {fdjax, reference, ratio}}``."""
  references, origin = reference_functions()
  args = _parse(argv, references)
  names = args.names
  images, described = load_images(args.source, args.batch, args.seed)
  device = jax.devices()[0]
  cpus = host.cpus()
  print(f"degradations: batch {args.batch} images {images.shape[1:]} uint8, {args.repeats} "
        f"repeats (median); jax {jax.__version__} on {jax.default_backend()} "
        f"({device.device_kind}, {jax.device_count()} device(s)); {host.describe()}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
  print(f"images: {described}", flush=True)
  print(f"reference: {origin}, one image at a time on one core (fdjax: XLA's thread pool "
        f"over the {cpus} CPU(s), each call of degradations.apply with its checks of the "
        f"levels, about 0.1 ms); >= {args.seconds:g} s per timed repeat", flush=True)
  print(f"load average at start: {host.load_averages()}", flush=True)

  device_images = jax.device_put(images)
  key = jax.random.key(args.seed)
  np.random.seed(301)  # the paper's evaluation seed for the reference's numpy draws
  rows, results = [], {}
  for index, name in enumerate(names):
    level_key, apply_key = jax.random.split(jax.random.fold_in(key, index))
    levels = degradations.sample_levels(name, level_key, args.batch)
    host_levels = reference_levels(name, np.asarray(levels))
    reference = references[name]

    def run_fdjax(name=name, levels=levels):
      return jax.block_until_ready(degradations.apply(name, apply_key, device_images, levels))

    out = np.asarray(run_fdjax())  # compile + warm-up
    ref_out = np.stack([reference(x, level) for x, level in zip(images, host_levels)])  # warm-up
    agree = (f"{100.0 * np.mean(out == ref_out):.2f}%" if name in ("jpeg", "blur") else "-")
    fdjax_ips, reference_ips = [], []
    for _ in range(args.repeats):
      fdjax_ips.append(args.batch * time_calls(run_fdjax, args.seconds))
      reference_ips.append(time_reference(reference, images, host_levels, args.seconds))
    fdjax_ips = statistics.median(fdjax_ips)
    ref_ips = statistics.median(reference_ips)
    results[name] = {"fdjax": fdjax_ips, "reference": ref_ips, "ratio": fdjax_ips / ref_ips}
    rows.append((name, f"{fdjax_ips:,.0f}", f"{ref_ips:,.0f}", f"{fdjax_ips / ref_ips:.2f}x",
                 agree))
    print(f"  {name}: fdjax {fdjax_ips:,.0f} img/s, reference {ref_ips:,.0f} img/s "
          f"(load {host.load_averages()})", flush=True)

  print_table(("name", "fdjax img/s", "reference img/s", "ratio", "equal to ref"), rows)
  print(f"load average at end: {host.load_averages()}", flush=True)
  return results
