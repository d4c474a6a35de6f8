"""The image files ``fdjax.apply`` reads and writes: a user's photo read as uint8 RGB, what
its file says about the output (colour profile, frames, one channel), and the one-channel
output of a greyscale photo."""

from __future__ import annotations

from fdjax.errors import DataError


def read_image_file(path: str, size: tuple[int, int] | None = None):
  """``(image, facts)`` of file ``path``, opened once.

  ``image``: uint8 RGB ``[H, W, 3]``, upright by its EXIF orientation (as viewers show
  phone photos); grey (16-bit grey scaled to 8 bits), palette and RGBA (alpha dropped)
  converted (``fdjax.data._decode.rgb_uint8``); resized (bicubic) to ``size`` = (height,
  width) when given and different.

  ``facts``: ``(profile, frames, grey)``: the ICC colour profile embedded in the file
  that describes the output (an RGB one, or a grey one for a one-channel file; None:
  none, or one for another colour space), its number of frames (an animated GIF or a
  multi-page TIFF: more than 1; the image is the first) and whether it holds one
  channel (``fdjax.data._decode.one_channel``).

  Raises ``DataError`` when the file cannot be read as an image.
  """
  import numpy as np
  from PIL import Image

  from fdjax.data._decode import one_channel, rgb_uint8

  errors = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
  try:
    with Image.open(path) as im:
      image = rgb_uint8(im)   # upright by its EXIF orientation, as every loader
      try:   # a damaged later page (n_frames reads every header) spoils only the facts
        grey = one_channel(im)
        profile = im.info.get("icc_profile") or None
        frames = int(getattr(im, "n_frames", 1) or 1)
      except errors:
        grey, profile, frames = False, None, 1
  except errors as e:
    raise DataError(f"cannot read image {path}: {e}") from None
  if size is not None and image.shape[:2] != tuple(size):
    image = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BICUBIC))
  # Only a profile of the output's colour space describes it (a CMYK or Lab one, or a
  # grey one on RGB, would be misread).
  space = b"GRAY" if grey else b"RGB "
  profile = profile if profile and profile[16:20] == space else None
  return image, (profile, frames, grey)


def grey_uint8(image):
  """uint8 ``[H, W]``: full-range BT.601 luma of uint8 RGB ``[H, W, 3]``, ``(65.481 R +
  128.553 G + 24.966 B) / 219``, rounded; the value itself where the channels are equal."""
  import numpy as np

  from fdjax.eval.image_quality import BT601_WEIGHTS

  # in float64 the weights sum to 219 exactly and a grey pixel's luma rounds to its value
  # (every one of 0..255; float32 needs image_quality.prepare_pair's equal-channel case)
  luma = np.asarray(image).astype(np.float64) @ np.asarray(BT601_WEIGHTS) / sum(BT601_WEIGHTS)
  return np.clip(np.rint(luma), 0, 255).astype(np.uint8)
