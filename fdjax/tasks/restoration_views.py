"""Restoration training views: the same random patch, flip and 90-degree rotation of
every view of an image (input and target alike), the degraded input, and where the model
takes an image prior's cue from a larger context, that cue; on device, per image."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fdjax.models.image_prior import attach_cue, cue_of

PRIOR_CONTEXTS = ("patch", "tile")
CUE_JITTER_RATE = 0.5   # the share of training examples whose cue ``cue_jitter`` may raise
_CUE_JITTER_STREAM = 0x6A17   # folded into the views' key: the other draws stay as they were


def random_patches(key, *views, size: int | None):
  """The same random ``size x size`` crop of every view (per image), or the views
  themselves when ``size`` is None or equals their H and W. Views share ``[B, H, W]``."""
  b, h, w = views[0].shape[:3]
  if any(v.shape[:3] != (b, h, w) for v in views):
    raise ValueError(f"views must share [B, H, W], got {[v.shape for v in views]}")
  if size is None or (h, w) == (size, size):
    return views
  if size > min(h, w):
    raise ValueError(f"patch {size} is larger than the {h}x{w} images")
  key_y, key_x = jax.random.split(key)
  ys = jax.random.randint(key_y, (b,), 0, h - size + 1)
  xs = jax.random.randint(key_x, (b,), 0, w - size + 1)

  def crop(view):
    one = lambda image, y, x: jax.lax.dynamic_slice(image, (y, x, 0),
                                                    (size, size, view.shape[-1]))
    return jax.vmap(one)(view, ys, xs)

  return tuple(crop(v) for v in views)


def random_flip_rot90(key, *views, flip: bool = True, rot90: bool = True, upright=None):
  """Per image, the same random left-right flip (``flip``) and rotation by 0/90/180/270
  degrees (``rot90``; needs square images) of every view ``[B, S, S, C]``. ``upright``
  (bool ``[B]``, optional): images turned by 0 or 180 degrees only, so what runs down
  their rows still does (real rain's streaks)."""
  b, h, w = views[0].shape[:3]
  if rot90 and h != w:
    raise ValueError(f"90-degree rotations need square patches, got {h}x{w}")
  k_flip, k_quarter, k_half = jax.random.split(key, 3)
  bit = lambda k: jax.random.bernoulli(k, 0.5, (b,))[:, None, None, None]
  lr, quarter, half = bit(k_flip), bit(k_quarter), bit(k_half)
  if upright is not None:
    quarter = quarter & ~jnp.asarray(upright, bool)[:, None, None, None]

  def transform(x):
    if flip:
      x = jnp.where(lr, x[:, :, ::-1], x)
    if rot90:
      x = jnp.where(quarter, jnp.swapaxes(x, 1, 2)[:, ::-1], x)   # np.rot90: 90 degrees
      x = jnp.where(half, x[:, ::-1, ::-1], x)                     # + 180 degrees
    return x

  return tuple(transform(v) for v in views)


def _degraded(key, batch: dict, views: tuple, degrade):
  """The network's input for ``views`` (``(input, clean)`` of a paired batch, ``(clean,)``
  of a clean-only one): a pair's own input, else ``degrade(key, clean)``; mixed batches
  (a 'real' flag per example) keep the real pairs' inputs and degrade the others."""
  if "target" in batch and "real" not in batch:
    return views[0]
  clean = views[-1]
  synthetic = degrade(key, clean) if degrade is not None else clean
  if "target" not in batch:
    return synthetic
  return jnp.where(batch["real"][:, None, None, None], views[0], synthetic)


def cue_jitter_problem(jitter: float, prior: str, prior_context: str) -> str | None:
  """Why ``cue_jitter`` cannot apply with this ``prior`` and ``prior_context`` (the cue is
  raised where the tile's is computed), or None. One rule for the config's validation,
  the task and ``training_views``."""
  if jitter and (prior == "none" or prior_context != "tile"):
    return ("restoration.cue_jitter needs an image_prior (not 'none') and "
            f"prior_context='tile', got image_prior={prior!r}, prior_context={prior_context!r}")
  return None


def tile_cue(key, tile, prior: str, jitter: float = 0.0):
  """float32 ``[B, n]`` in 0..255: ``prior``'s cue of each degraded ``tile`` ``[B, T, T,
  3]`` (0..255), and with ``jitter`` > 0 (levels of 255) each example's cue, with
  probability ``CUE_JITTER_RATE``, raised to a level drawn uniformly from 0..``jitter``
  (``max(cue, u)``): scenes that read like haze without being hazed. The raise is
  one-sided, so a low cue still means no thick haze; the network learns that a high cue
  alone does not call for dehazing (BUILD_NOTES.md, "Cue jitter in the code")."""
  cue = cue_of(tile, prior)
  if not jitter:
    return cue
  k_which, k_level = jax.random.split(key)
  raised = jax.random.bernoulli(k_which, CUE_JITTER_RATE, cue.shape)
  level = jax.random.uniform(k_level, cue.shape, jnp.float32, 0.0, float(jitter))
  return jnp.where(raised, jnp.maximum(cue, level), cue)


def real_examples(batch: dict):
  """bool ``[B]``: the examples of ``batch`` whose input is a real degraded image (every
  example of a paired batch, the 'real' ones of a mixed batch), or None (clean-only)."""
  if "real" in batch:
    return batch["real"]
  if "target" in batch:
    return jnp.ones(batch["image"].shape[:1], bool)
  return None


def training_views(key, batch: dict, degrade, *, patch: int | None, flip: bool,
                   rot90: bool, prior: str = "none", prior_context: str = "patch",
                   cue_jitter: float = 0.0, rotate_real: bool = True):
  """``(input, clean, input)`` of a training batch (``fdjax.tasks.restoration``).

  ``batch``: uint8 ``[B, T, T, 3]`` tiles, ``{'image'}`` (clean-only) or ``{'image',
  'target'}`` (pairs; with ``'real'`` flags when mixed). ``prior_context``:

  * 'patch': crop, flip/rotate, then degrade the ``patch x patch`` crop; the input is
    uint8 ``[B, patch, patch, 3]`` and the model computes ``prior``'s cue from it;
  * 'tile' (with a ``prior``): flip and rotate the whole tile, degrade it, compute the
    cue from it (a stand-in for the whole image that inference sees), then crop; the
    input is float32 ``[B, patch, patch, 3 + n]`` in 0..255 with the cue (0..255) in its
    trailing channels, which the model takes as given (``fdjax.models.image_prior``);
    ``cue_jitter`` > 0 raises some of those cues at random (``tile_cue``).

  ``rotate_real`` False: real inputs (``real_examples``) get no quarter turn, so real
  rain falls down the rows as in Rain100L (synthetic rain is added after the turn and
  always does). ``clean`` is uint8 ``[B, patch, patch, 3]``."""
  if prior_context not in PRIOR_CONTEXTS:
    raise ValueError(f"prior_context must be one of {PRIOR_CONTEXTS}, got {prior_context!r}")
  problem = cue_jitter_problem(cue_jitter, prior, prior_context)
  if problem:
    raise ValueError(problem)
  k_patch, k_aug, k_degrade = jax.random.split(key, 3)
  views = (batch["image"], batch["target"]) if "target" in batch else (batch["image"],)
  turn = dict(flip=flip, rot90=rot90,
              upright=None if rotate_real else real_examples(batch))
  if prior_context == "tile" and prior != "none":
    # Flip and rotate before degrading, as on the patch: rain falls down the rows and
    # haze thickens up them in every training input, as in the test images.
    views = random_flip_rot90(k_aug, *views, **turn)
    tile = _degraded(k_degrade, batch, views, degrade)
    degraded, clean = random_patches(k_patch, tile, views[-1], size=patch)
    cue = tile_cue(jax.random.fold_in(key, _CUE_JITTER_STREAM), tile, prior, cue_jitter)
    degraded = attach_cue(jnp.asarray(degraded, jnp.float32), cue)
    return degraded, clean, degraded
  views = random_patches(k_patch, *views, size=patch)
  views = random_flip_rot90(k_aug, *views, **turn)
  degraded = _degraded(k_degrade, batch, views, degrade)
  return degraded, views[-1], degraded
