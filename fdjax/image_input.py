"""The images a user hands a loaded model or predictor (``fdjax.load_model``'s
``predict``, ``fdjax.predictor``): read to the host, checked to be uint8 RGB of the right
shape (0..255), each problem one ``DataError`` line saying what was given."""

from __future__ import annotations


def image_problem(shape, dtype, *, batch: bool = False,
                  size: tuple[int, int] | None = None) -> str | None:
  """What is wrong with images of ``shape`` and ``dtype`` for a model that takes uint8
  RGB ``[H, W, 3]`` or ``[B, H, W, 3]`` (``batch``: ``[B, H, W, 3]`` only; ``size``:
  (H, W) required), or None. The one check of ``checked_batch`` and
  ``fdjax.predictor.check_images``."""
  import numpy as np

  shape = tuple(shape)
  if (dtype == np.uint8 and len(shape) in ((4,) if batch else (3, 4)) and shape[-1] == 3
      and 0 not in shape and (size is None or shape[-3:-1] == tuple(size))):
    return None
  want = "[H, W, 3] or [B, H, W, 3]" if not batch else (
      f"[B, {size[0]}, {size[1]}, 3] (the run's image size)" if size else "[B, H, W, 3]")
  return f"expected uint8 RGB images {want} (0..255), got {dtype} {list(shape)}"


def host_images(images):
  """``np.asarray(images)``; a list of images of different sizes, which numpy cannot
  stack, is a DataError (one batch holds one size)."""
  import numpy as np

  from fdjax.errors import DataError

  try:
    return np.asarray(images)
  except ValueError as e:
    if not isinstance(images, (list, tuple)):
      raise DataError(f"cannot read the images as an array: {e}") from None
    shapes = sorted({str(list(np.shape(x))) for x in images})
    raise DataError(f"a batch holds images of one size; got {len(images)} images of shapes "
                    f"{', '.join(shapes[:4])}{' ...' if len(shapes) > 4 else ''}: pass them "
                    "one at a time") from None


def checked_batch(images, size: tuple[int, int] | None = None):
  """``images`` as given (not copied to the host) when they are a uint8 batch ``[B, H, W,
  3]`` (0..255) of ``size`` = (H, W) (None: any); DataError naming what was given
  otherwise."""
  import numpy as np

  from fdjax.errors import DataError

  if not hasattr(images, "dtype"):
    images = host_images(images)
  problem = image_problem(np.shape(images), images.dtype, batch=True, size=size)
  if problem:
    raise DataError(problem)
  return images
