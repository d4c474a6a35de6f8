"""Decodes image files (JPEG, PNG, ...) into one uint8 RGB array, in parallel.

Decoding small images with PIL is bound by Python-level header parsing (about 0.1 ms
per 32x32 JPEG; BUILD_NOTES.md, "Session of 2026-12-07, night"), so threads do not
help; this module fans the files out over worker *processes*. Each worker runs this
very file as a script (``python -P _decode.py job.json``): it imports only numpy and
PIL, starts in ~0.1 s, never re-imports the caller's ``__main__`` (unlike
multiprocessing's spawn, which breaks scripts without an ``if __name__ == '__main__'``
guard) and never forks a process that runs JAX threads.
Keep this module free of top-level fdjax imports (the workers run it alone).

Jobs and results go through a scratch directory
``<system temp dir>/fdjax-decode@<host>@<pid>@<random>``, deleted when decoding ends;
one left behind by a killed run is deleted by the next ``decode_parallel`` once its
owner process is gone (``fdjax.data.stale``).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image, ImageOps

MIN_PER_WORKER = 2000  # fewer files than this per worker are decoded in-process
MAX_WORKERS = 8
SCRATCH_PREFIX = "fdjax-decode"  # scratch directories in tempfile.gettempdir()


class UnsupportedImageError(ValueError):
  """An image whose pixel values have no one reading as 0..255 (float, 32-bit)."""


_ORIENTATION = 0x0112   # the EXIF tag; 5..8 turn the image by 90 degrees


def _orientation(im: Image.Image) -> int:
  try:
    return int(im.getexif().get(_ORIENTATION, 1) or 1)
  except (ValueError, TypeError, SyntaxError, OSError):   # an unreadable EXIF block
    return 1


def upright_size(im: Image.Image) -> tuple[int, int]:
  """``(width, height)`` of ``im`` once turned upright by its EXIF orientation."""
  w, h = im.size
  return (h, w) if _orientation(im) in (5, 6, 7, 8) else (w, h)


def one_channel(im: Image.Image) -> bool:
  """Whether ``im`` is a greyscale file (PIL bands L, I or 1, with or without alpha, or
  a palette whose every colour is grey): MATLAB reads it as one channel (``size(im, 3)
  == 1``), ``rgb_uint8`` as three equal ones."""
  if im.mode in ("P", "PA"):
    palette = np.asarray(im.getpalette() or [], np.uint8).reshape(-1, 3)
    return bool(len(palette)) and bool((palette == palette[:, :1]).all())
  return [b for b in im.getbands() if b not in ("A", "a")] in (["L"], ["I"], ["1"])


def rgb_uint8(im: Image.Image) -> np.ndarray:
  """uint8 RGB ``[H, W, 3]`` (0..255) of PIL image ``im``, upright by its EXIF orientation
  (as viewers show a camera's photo; every loader, training and ``fdjax.apply`` alike).
  16-bit grey (modes ``I;16*``, and ``I``, which holds 16-bit PNGs) is scaled 0..65535 ->
  0..255 (divided by 257, rounded, clipped), where PIL's own ``convert`` would clip it to
  255 (a white image); 16-bit RGB PNGs PIL itself reads as 8-bit RGB (the high byte:
  value // 256); grey, palette, CMYK and RGBA (alpha dropped) are converted by PIL. Float
  images (mode ``F``: 0..1 or 0..255 or anything) and ``I`` images with values outside
  0..65535, or within 1..255 (8-bit values in a 32-bit TIFF: no one reading), raise
  ``UnsupportedImageError``: PIL would turn them black or white without a word."""
  if _orientation(im) != 1:
    im = ImageOps.exif_transpose(im)
  if im.mode == "RGB":
    return np.asarray(im, np.uint8)
  if im.mode == "F":
    raise UnsupportedImageError("a floating-point image (PIL mode 'F') has no one pixel "
                                "scale; save it as 8- or 16-bit")
  if im.mode.startswith("I;16") or im.mode == "I":
    values = np.asarray(im, np.float64)
    if values.size and (values.min() < 0 or values.max() > 65535):
      raise UnsupportedImageError(f"a 32-bit integer image with values {values.min():g}.."
                                  f"{values.max():g}, outside 16 bits; save it as 8- or "
                                  "16-bit")
    if im.mode == "I" and values.size and 0 < values.max() <= 255:
      # 8-bit values in a 32-bit file (a TIFF), or a 16-bit image dark to black: divided
      # by 257 as 16 bits it would read as nearly black, kept as 8 bits too bright.
      raise UnsupportedImageError(f"a 32-bit integer image with values {values.min():g}.."
                                  f"{values.max():g}: 8-bit values, or a 16-bit image "
                                  "almost black? save it as 8- or 16-bit")
    grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
  return np.asarray(im.convert("RGB"), np.uint8)


def _reason(e: Exception) -> str:
  """``e``'s message, without the in-memory file object PIL names when it cannot
  identify an image read from bytes."""
  if isinstance(e, Image.UnidentifiedImageError):
    return "not an image file PIL can identify (damaged, or another format)"
  return str(e)


def image_size(path: str) -> tuple[int, int]:
  """``(width, height)`` of an image file, read from its header, upright."""
  try:
    with Image.open(path) as im:
      return upright_size(im)
  except (OSError, SyntaxError, Image.DecompressionBombError) as e:
    raise ValueError(f"cannot read image {path}: {e}") from None


def decode_files(paths, ref_path: str, ref_size: tuple[int, int]) -> np.ndarray:
  """Decodes ``paths`` -> uint8 ``[N, H, W, 3]`` (RGB, 0..255), serially.

  Every image must be ``ref_size`` = (width, height), the size of ``ref_path``;
  otherwise ValueError names both files and their sizes.
  """
  w, h = ref_size
  out = np.empty((len(paths), h, w, 3), np.uint8)
  for i, path in enumerate(paths):
    try:
      with open(path, "rb") as f:
        data = f.read()
      with Image.open(io.BytesIO(data)) as im:
        size = upright_size(im)
        if size != (w, h):
          raise ValueError(
              f"images have different sizes: {ref_path} is {w}x{h} (width x height) but "
              f"{path} is {size[0]}x{size[1]}; all images must share one size")
        out[i] = rgb_uint8(im)
    except (OSError, SyntaxError, Image.DecompressionBombError, UnsupportedImageError) as e:
      raise ValueError(f"cannot decode image {path}: {_reason(e)}") from None
  return out


def default_workers() -> int:
  """CPU cores this process may use, capped at ``MAX_WORKERS``."""
  try:
    n = len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    n = os.cpu_count() or 1
  return max(1, min(n, MAX_WORKERS))


def decode_parallel(paths, ref_path: str, ref_size: tuple[int, int],
                    workers: int | None = None) -> np.ndarray:
  """``decode_files`` spread over ``workers`` processes (this one included)."""
  paths = [str(p) for p in paths]
  workers = min(workers or default_workers(), max(1, len(paths) // MIN_PER_WORKER))
  if workers <= 1 or not sys.executable:  # (no interpreter to launch when embedded)
    return decode_files(paths, ref_path, ref_size)
  from fdjax.data import stale  # here, not at the top: workers import nothing of fdjax

  scratch_root = tempfile.gettempdir()
  stale.remove_stale(scratch_root, SCRATCH_PREFIX)
  bounds = np.linspace(0, len(paths), workers + 1).astype(int)
  procs = []
  tmp = str(stale.make_temp_dir(scratch_root, SCRATCH_PREFIX))
  try:
    for k in range(1, workers):  # chunk 0 is decoded here while the others run
      job = os.path.join(tmp, f"job{k}.json")
      with open(job, "w") as f:
        json.dump({"paths": paths[bounds[k]:bounds[k + 1]], "ref_path": ref_path,
                   "ref_size": list(ref_size), "out": os.path.join(tmp, f"part{k}.npy")}, f)
      procs.append(subprocess.Popen([sys.executable, "-P", os.path.abspath(__file__), job],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    parts = [decode_files(paths[:bounds[1]], ref_path, ref_size)]
    for k, proc in enumerate(procs, start=1):
      _, err = proc.communicate()
      if proc.returncode != 0:
        msg = err.decode(errors="replace").strip()
        if proc.returncode == 2:  # a ValueError from decode_files, message on stderr
          raise ValueError(msg)
        raise RuntimeError(f"image decoding worker failed (exit {proc.returncode}): {msg[-2000:]}")
      parts.append(np.load(os.path.join(tmp, f"part{k}.npy")))
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
    shutil.rmtree(tmp, ignore_errors=True)
  return np.concatenate(parts)


def _worker_main(job_path: str) -> int:
  with open(job_path) as f:
    job = json.load(f)
  try:
    out = decode_files(job["paths"], job["ref_path"], tuple(job["ref_size"]))
  except ValueError as e:
    sys.stderr.write(str(e))
    return 2
  np.save(job["out"], out)
  return 0


if __name__ == "__main__":
  sys.exit(_worker_main(sys.argv[1]))
