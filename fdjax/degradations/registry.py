"""The degradation registry: a plain dict from name to a small frozen description.

Each entry holds the uint8 function, the float function, the level grid (in the
degradation's own units), the clean level and how the paper reports the level.
``apply`` / ``apply_float`` validate their inputs and dispatch through this dict.

A new degradation is an entry here (a pure ``f(key, images, levels)`` for uint8 and for
float images, its grid, clean level and units) and its name in ``fdjax.config.LEVEL_NAMES``
(the config's level fields, ``levels.<name>`` and ``eval_levels.<name>``: a copy, since
``fdjax.config`` loads without JAX). Entries are read when called, so replacing one in a
running process takes effect at its next ``apply``. A changed grid changes the
fingerprints of the stages and evaluations that use it (``grid_changes``); a changed
function needs its ``revision`` raised.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fdjax.degradations import blur as blur_lib
from fdjax.degradations import jpeg as jpeg_lib
from fdjax.degradations import noise as noise_lib
from fdjax.degradations import resize as resize_lib
from fdjax.degradations import restoration
from fdjax.degradations.checks import check_images, check_levels

# The four degradations of the paper, in its order.
NAMES = ("jpeg", "blur", "awgn", "sapn")
RESTORATION_NAMES = ("haze", "rain", "lowlight", "motion_blur")  # and "denoise", "sr"

# f(key, images [B, H, W, 3], levels float [B]) -> images of the same shape.
DegradeFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Degradation:
  """One degradation.

  Attributes:
    name: registry key.
    apply_uint8: f(key, uint8 0..255 images, levels) -> uint8 images.
    apply_float: f(key, float 0..1 images, levels) -> float32 images in 0..1, but
      sr's, which overshoots it by a few hundredths (``apply_float`` clips).
    grid: the level grid, ascending, in ``units``.
    clean_level: the level at which the images are returned unchanged.
    units: what a level means.
    reported_offset, reported_sign: the paper's reporting level is
      ``reported_offset + reported_sign * level`` (JPEG: 100 - Q; others: the level).
    revision: raised whenever the function changes the images it makes for the same
      key and level; stages and evaluations made at an older revision are not reused
      (``revisions``, read by the stage fingerprints and the evaluation cache).
    grid_only: only the grid's levels mean something (sr's integer scales): others are
      refused when the levels are concrete.
  """

  name: str
  apply_uint8: DegradeFn
  apply_float: DegradeFn
  grid: tuple[float, ...]
  clean_level: float
  units: str
  reported_offset: float = 0.0
  reported_sign: float = 1.0
  revision: int = 1
  grid_only: bool = False

  def __post_init__(self):
    grid = tuple(float(level) for level in self.grid)
    if (not grid or not all(math.isfinite(level) for level in grid)
        or any(b <= a for a, b in zip(grid, grid[1:]))):
      raise ValueError(f"degradation {self.name!r}: its grid must be non-empty, finite and "
                       f"strictly ascending, got {list(grid)[:8]}")
    object.__setattr__(self, "grid", grid)   # a tuple of floats: one digest


def _jpeg_float(key, images, levels):
  """float 0..1 images -> the codec's integer-exact path (libjpeg rounding) -> 0..1:
  quantised, so its gradient is 0."""
  del key  # the codec is deterministic
  out = jpeg_lib.jpeg_float(jnp.asarray(images, jnp.float32) * 255.0, levels)
  return jnp.clip(out / 255.0, 0.0, 1.0)


def _sapn_float(salt_value: float) -> DegradeFn:
  return functools.partial(noise_lib.sapn_float, salt_value=salt_value / 255.0)


def _grid(values) -> tuple[float, ...]:
  return tuple(float(v) for v in np.asarray(values, np.float64))


REGISTRY: dict[str, Degradation] = {
    "jpeg": Degradation(
        "jpeg", jpeg_lib.jpeg, _jpeg_float, _grid(np.arange(1, 102)), clean_level=101.0,
        units="JPEG quality Q, 1..101 step 1; 101 = not compressed (4:2:0 chroma)",
        reported_offset=100.0, reported_sign=-1.0),
    "blur": Degradation(
        "blur", blur_lib.blur, blur_lib.blur_float, _grid(blur_lib.SIGMA_GRID), clean_level=0.0,
        units="Gaussian sigma in pixels, 0..5 step 0.1 (truncate 3.0, 'nearest' edges)"),
    "awgn": Degradation(
        "awgn", noise_lib.awgn, noise_lib.awgn_float, _grid(np.arange(51)), clean_level=0.0,
        units="noise sigma in 0..255 pixel units, 0..50 step 1"),
    "sapn": Degradation(
        "sapn", noise_lib.sapn, _sapn_float(noise_lib.SALT), _grid(np.arange(26) / 100),
        clean_level=0.0, units="salt-and-pepper density p, 0..0.25 step 0.01; salt = 255"),
    # The reference's bug reproduced: salt pixels are set to 1, not 255. Not in NAMES.
    "sapn_paper": Degradation(
        "sapn_paper", functools.partial(noise_lib.sapn, salt_value=noise_lib.PAPER_SALT),
        _sapn_float(noise_lib.PAPER_SALT), _grid(np.arange(26) / 100), clean_level=0.0,
        units="salt-and-pepper density p, 0..0.25 step 0.01; salt = 1 (reference bug)"),
    "denoise": Degradation(
        "denoise", restoration.denoise, restoration.denoise_float,
        _grid(restoration.DENOISE_GRID), clean_level=0.0,
        units="noise sigma in 0..255 pixel units, 0..55 step 1 (float noise, uint8 "
              "clipped and truncated)"),
    "haze": Degradation(
        "haze", restoration.haze, restoration.haze_float, _grid(restoration.HAZE_GRID),
        clean_level=0.0, units="scattering coefficient beta, 0..3 step 0.1"),
    "rain": Degradation(
        "rain", restoration.rain, restoration.rain_float, _grid(restoration.RAIN_GRID),
        clean_level=0.0, units="fraction of pixels seeding a streak, 0..0.05 step 0.005",
        # 2: streaks add light (1: screen-blended, before 2026-12-05); 3: the streak map's
        # convolution summed in another order (a few uint8 values move by 1).
        revision=3),
    "lowlight": Degradation(
        "lowlight", restoration.lowlight, restoration.lowlight_float,
        _grid(restoration.LOWLIGHT_GRID), clean_level=0.0,
        units="darkening factor k, 0..0.9 step 0.05 (gain 1 - k, gamma 1 + k, noise)",
        revision=2),   # 2: the noise's std as sqrt(k) * sqrt(...) (finite gradients at k=0)
    "motion_blur": Degradation(
        "motion_blur", restoration.motion_blur, restoration.motion_blur_float,
        _grid(restoration.MOTION_BLUR_GRID), clean_level=0.0,
        units="motion segment length L in pixels, 0..15 step 1 (random direction; "
              "antialiased, so the kernel spans about L + 1 pixels: L=1 is [1/4, 1/2, 1/4])",
        revision=2),   # 2: the convolution summed in another order (a few uint8 values move by 1)
    "sr": Degradation(
        "sr", resize_lib.sr, resize_lib.sr_float, _grid(resize_lib.SR_GRID), clean_level=1.0,
        units="super-resolution scale s, 1..4 step 1: MATLAB bicubic down by s (antialiased) "
              "and back up to the input size; 1 = unchanged",
        revision=3, grid_only=True),
    # 2: uint8 rounded after each 1-D pass, as MATLAB (was: after both); 3: exact .5 ties
    # rounded up, as MATLAB's uint8 conversion (was: to even; ~1 % of the pixels at x2)
}


def get(name: str) -> Degradation:
  """The registry entry for ``name``; ValueError listing the valid names otherwise."""
  if not isinstance(name, str) or name not in REGISTRY:
    raise ValueError(f"unknown degradation {name!r}; valid names: {sorted(REGISTRY)}")
  return REGISTRY[name]


def revisions(names) -> dict[str, int]:
  """``{name: revision}`` for the degradations of ``names`` past their first revision
  (empty when none: what runs made before revisions existed recorded)."""
  return {name: rev for name in names if (rev := get(name).revision) > 1}


def grid_digest(grid) -> str:
  """12 hex digits of sha256 over ``grid``'s levels (to 9 significant digits, so the same
  levels built another way keep their digest)."""
  values = [float(f"{float(level):.9g}") for level in grid]
  return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:12]


# ``grid_digest`` of each grid as every run saved before grids entered fingerprints
# (2026-12-07) had it: a degradation whose grid still has it adds nothing to a stage's
# fingerprint or an evaluation's cache key, so those runs stay valid.
SAVED_GRIDS = {"jpeg": "2af45a0f679a", "blur": "de6276c43447", "awgn": "b3fb0888b9a0",
               "sapn": "301bcf796823", "sapn_paper": "301bcf796823",
               "denoise": "ad4d757fb585", "haze": "089e32a74247", "rain": "4c64d039e04e",
               "lowlight": "b4f556f58180", "motion_blur": "dfdf3b3512b3",
               "sr": "b64f695e84c8"}


def grid_changes(names) -> dict[str, str]:
  """``{name: grid_digest}`` for the degradations of ``names`` whose grid is not the one
  of ``SAVED_GRIDS`` (changed since, or a degradation added since): what stage
  fingerprints and evaluation cache keys record, so that editing a grid never reuses
  what the old grid trained or scored."""
  return {name: digest for name in names
          if (digest := grid_digest(get(name).grid)) != SAVED_GRIDS.get(name)}


def levels(name: str) -> np.ndarray:
  """float64 ``[n]``: the level grid of ``name``, ascending, in its own units."""
  return np.asarray(get(name).grid, np.float64)


def clean_level(name: str) -> float:
  """The level that leaves images unchanged (JPEG 101, all others 0)."""
  return get(name).clean_level


def sample_from_grid(grid, key: jax.Array, n: int) -> jax.Array:
  """float32 ``[n]``: points of ``grid`` drawn uniformly (jit-safe; n static)."""
  grid = jnp.asarray(grid, jnp.float32)
  return grid[jax.random.randint(key, (n,), 0, grid.shape[0])]


def sample_levels(name: str, key: jax.Array, n: int) -> jax.Array:
  """float32 ``[n]``: levels drawn uniformly over the full grid of ``name``. A study
  draws through its ``LevelPlan`` (``fdjax.degradations.plan``), which may restrict it."""
  return sample_from_grid(levels(name), key, n)


def normalised_level(name: str, level):
  """The level as the paper reports it (``per_level.csv``'s ``normalised_level``: the
  reported scale, not a 0..1 one): JPEG ``100 - Q``, every other degradation its level.

  So JPEG Q = 100..1 reports as 0..99; the uncompressed Q = 101 reports as -1.
  Works on Python floats, numpy and jax arrays.
  """
  entry = get(name)
  return entry.reported_offset + entry.reported_sign * level


_JITTED: dict[tuple[str, bool], tuple[Degradation, DegradeFn]] = {}


def _jitted(entry: Degradation, float_images: bool) -> DegradeFn:
  """The entry's function under jit: fast when called eagerly, inlined inside an outer jit.
  One per name, kept while that name's entry is this very object: an entry replaced in
  ``REGISTRY`` is never served stale, and the replaced one is not kept."""
  cached = _JITTED.get((entry.name, float_images))
  if cached is None or cached[0] is not entry:
    cached = (entry, jax.jit(entry.apply_float if float_images else entry.apply_uint8))
    _JITTED[(entry.name, float_images)] = cached
  return cached[1]


def apply(name: str, key: jax.Array, images, levels) -> jax.Array:
  """Degrades uint8 images, one level per image.

  Args:
    name: a registry name (``NAMES``, ``RESTORATION_NAMES`` or 'sapn_paper'); static.
    key: PRNG key (ignored by deterministic degradations).
    images: uint8 ``[B, H, W, 3]``, 0..255.
    levels: float ``[B]`` (or a scalar for all) in the degradation's own units,
      within its grid's range (see ``levels(name)``); checked only when concrete. A
      traced level outside it is not refused and means what the function makes of it
      (e.g. JPEG Q below 1 is Q 1, an sr level is rounded to the nearest integer scale
      and one that does not round to a scale of its grid leaves the image unchanged,
      a blur sigma above the grid keeps the grid's largest kernel radius).

  Returns:
    uint8 ``[B, H, W, 3]``. Static shapes, no host round trip: jit- and vmap-safe.
  """
  entry = get(name)
  images = check_images(images, uint8=True)
  return _jitted(entry, False)(key, images, check_levels(entry, levels, images.shape[0]))


def apply_float(name: str, key: jax.Array, images, levels) -> jax.Array:
  """Like ``apply`` for float images in 0..1; returns float32 ``[B, H, W, 3]`` in 0..1
  (clipped: sr's bicubic kernel overshoots the range a little before it). Concrete images
  with values above 1.5 (0..255 floats) are a ValueError.

  Not quantised to uint8 (blur, noise and the restoration models compute in float), so
  it can sit inside a differentiable pipeline where the degradation is differentiable;
  JPEG is the exception: it runs the codec's libjpeg-exact (quantised) path, whose
  gradient is 0.
  """
  entry = get(name)
  images = check_images(images, uint8=False)
  out = _jitted(entry, True)(key, images, check_levels(entry, levels, images.shape[0]))
  return jnp.clip(out, 0.0, 1.0)
