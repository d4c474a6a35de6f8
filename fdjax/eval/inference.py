"""Whole-image inference at any size, for fully convolutional image-to-image networks.

A U-Net with ``depth`` down-samplings needs H and W divisible by ``2**depth``; test
images come in any size (Rain100L: 481x321 and 321x481). As maxim's and Restormer's
evaluation code do, ``pad_to_multiple`` pads the bottom and right edges by reflection
(numpy's ``'reflect'``: mirrored without repeating the edge pixel) and the output is
cropped back (``apply_padded``). For images too large for memory at once,
``apply_tiled`` runs the network on overlapping tiles and blends them; ``map_by_size``
batches a list of images of mixed sizes by size.

Functions take ``fn(images [B, h, w, C]) -> outputs [B, h, w, C']`` (e.g. a jitted
``lambda x: task.predict(model, variables, x)``) and images ``[B, H, W, C]`` (or
``[H, W, C]`` where said), numpy or JAX, any dtype ``fn`` accepts.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np

ImageFn = Callable[..., object]


def padded_size(size: int, multiple: int) -> int:
  """The smallest multiple of ``multiple`` that is >= ``size``."""
  if multiple < 1:
    raise ValueError(f"multiple must be >= 1, got {multiple}")
  return -(-size // multiple) * multiple


def pad_to_multiple(images, multiple: int, mode: str = "reflect"):
  """``[..., H, W, C] -> [..., H', W', C]`` with H', W' the next multiples of ``multiple``,
  padded at the bottom and right (``jnp.pad`` ``mode``, as ``np.pad``). Returns a JAX
  array (``images`` itself when no padding is needed)."""
  h, w = images.shape[-3:-1]
  pad_h, pad_w = padded_size(h, multiple) - h, padded_size(w, multiple) - w
  if not (pad_h or pad_w):
    return jnp.asarray(images)
  widths = [(0, 0)] * (images.ndim - 3) + [(0, pad_h), (0, pad_w), (0, 0)]
  return jnp.pad(jnp.asarray(images), widths, mode=mode)


def crop_to(images, height: int, width: int):
  """The top-left ``height x width`` pixels of ``[..., H, W, C]``."""
  return images[..., :height, :width, :]


def apply_padded(fn: ImageFn, images, multiple: int, mode: str = "reflect"):
  """``fn`` on ``images`` padded to ``multiple`` (``pad_to_multiple``), cropped back to
  the input's H x W."""
  h, w = images.shape[-3:-1]
  return crop_to(fn(pad_to_multiple(images, multiple, mode)), h, w)


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
  """Offsets of tiles of ``tile`` pixels covering ``0..length``, consecutive tiles
  overlapping by at least ``overlap``, every offset but the last a multiple of
  ``align``; the last tile ends at ``length``. One tile (offset 0) when ``length <= tile``."""
  if length <= tile:
    return [0]
  step = (tile - overlap) // align * align
  if step < 1:
    raise ValueError(f"tiles of {tile} overlapping by {overlap} leave no step that is a "
                     f"multiple of {align}")
  return list(range(0, length - tile, step)) + [length - tile]


def edge_weights(start: int, size: int, length: int, margin: int) -> np.ndarray:
  """float32 ``[size]``: 1, except 0 on the ``margin`` pixels at a tile edge that lies
  inside the image (their outputs saw the tile's padding, not the image)."""
  w = np.ones(size, np.float32)
  if margin:
    if start > 0:
      w[:margin] = 0
    if start + size < length:
      w[size - margin:] = 0
  return w


def _pair(value, what: str) -> tuple[int, int]:
  pair = (value, value) if np.isscalar(value) else tuple(value)
  if len(pair) != 2:
    raise ValueError(f"{what} must be an int or (height, width), got {value!r}")
  return int(pair[0]), int(pair[1])


def apply_tiled(fn: ImageFn, images, *, tile, overlap: int, margin: int | None = None,
                multiple: int = 1, tile_batch: int = 8) -> np.ndarray:
  """``fn`` over overlapping tiles of ``images`` ``[B, H, W, C]`` or ``[H, W, C]``, blended.

  The image is first padded to ``multiple`` (the network's stride; on the host, as
  ``pad_to_multiple``) and the result cropped back, so the tiled result approximates
  ``apply_padded(fn, images, multiple)``. Tiles are ``tile`` (int or (h, w), rounded
  down to a multiple of ``multiple``) pixels, clipped to the image, at the offsets of
  ``tile_starts`` (consecutive tiles overlap by at least ``overlap``; offsets aligned to
  ``multiple``, which keeps a U-Net's down-sampling grid). Each tile's output drops
  ``margin`` pixels (default ``overlap // 4``) at every edge inside the image; what
  remains of the overlaps is averaged. With ``margin`` at least the network's
  receptive-field radius, a translation-equivariant network gives the whole-image
  result exactly (pooling over the whole input, as channel attention and routers'
  prompts do, makes it only approximately so, however wide the margin).
  Tiles run ``tile_batch`` images at a time (the last group padded with copies, so
  ``fn`` sees one shape). Returns float32 numpy ``[..., H, W, C']``, accumulated on the
  host.
  """
  tile_h, tile_w = (t // multiple * multiple for t in _pair(tile, "tile"))
  margin = overlap // 4 if margin is None else int(margin)
  if min(tile_h, tile_w) < 1 or not 0 <= overlap < min(tile_h, tile_w):
    raise ValueError(f"need tile >= multiple ({multiple}) and 0 <= overlap < tile, got tile "
                     f"{tile!r}, overlap {overlap}")
  if not 0 <= margin <= overlap // 2:
    raise ValueError(f"margin must be in [0, overlap // 2] = [0, {overlap // 2}] so that "
                     f"every pixel keeps a tile, got {margin}")
  single = images.ndim == 3
  batch = np.asarray(images[None] if single else images)
  b, h, w = batch.shape[:3]
  ph, pw = padded_size(h, multiple), padded_size(w, multiple)
  if (ph, pw) != (h, w):   # on the host (np.pad): the whole image never goes to the device
    batch = np.pad(batch, [(0, 0), (0, ph - h), (0, pw - w), (0, 0)], mode="reflect")
  tile_h, tile_w = min(tile_h, ph), min(tile_w, pw)
  offsets = [(y, x) for y in tile_starts(ph, tile_h, overlap, multiple)
             for x in tile_starts(pw, tile_w, overlap, multiple)]
  per_call = max(1, tile_batch // b)  # tiles per call of fn (each holds b images)
  total = out = None
  for first in range(0, len(offsets), per_call):
    group = offsets[first:first + per_call]
    tiles = [batch[:, y:y + tile_h, x:x + tile_w] for y, x in group]
    tiles += [tiles[-1]] * (per_call - len(group))
    results = np.asarray(fn(np.concatenate(tiles)), np.float32)
    if out is None:
      out = np.zeros((b, ph, pw, results.shape[-1]), np.float32)
      total = np.zeros((ph, pw, 1), np.float32)
    for k, (y, x) in enumerate(group):
      weight = np.outer(edge_weights(y, tile_h, ph, margin),
                        edge_weights(x, tile_w, pw, margin))[..., None]
      out[:, y:y + tile_h, x:x + tile_w] += weight * results[k * b:(k + 1) * b]
      total[y:y + tile_h, x:x + tile_w] += weight
  out = (out / total)[:, :h, :w]
  return out[0] if single else out


def map_by_size(fn: ImageFn, images: Sequence, batch_size: int = 1) -> list[np.ndarray]:
  """``fn`` over a list of ``[H_i, W_i, C]`` images of mixed sizes: images of one size
  go through ``fn`` together, ``batch_size`` at a time (the last batch of a size padded
  with copies, so ``fn`` sees one shape per size). Returns numpy outputs
  ``[H_i, W_i, C']`` in the input order."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  groups: dict[tuple, list[int]] = {}
  for i, image in enumerate(images):
    groups.setdefault(tuple(image.shape), []).append(i)
  outputs: list = [None] * len(images)
  for indices in groups.values():
    for first in range(0, len(indices), batch_size):
      chunk = indices[first:first + batch_size]
      stacked = np.stack([np.asarray(images[i]) for i in chunk]
                         + [np.asarray(images[chunk[-1]])] * (batch_size - len(chunk)))
      results = np.asarray(fn(stacked))
      for k, i in enumerate(chunk):
        outputs[i] = results[k]
  return outputs
