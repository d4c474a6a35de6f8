"""The decoded-image cache of a folder or archive source: every split's uint8 arrays
saved once as ``.npy`` files (``<cache>/<entry>/decoded-v<n>/``), written whole or not
at all, read back with every file checked; a damaged cache is discarded (and decoded
again by the caller), and the folders of older versions are removed."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from fdjax.data import stale

log = logging.getLogger(__name__)

# The decoded arrays' folder; bump when the arrays a tree decodes to change (v2: 16-bit
# grey scaled to 0..255, where v1 clipped it to 255). Older versions are deleted.
DECODED = "decoded-v3"   # v3: images upright by their EXIF orientation (2026-12-07)
PARTIAL = ".partial"  # suffix of temporary directories next to DECODED


def save(dest: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]],
         class_names: tuple[str, ...]) -> None:
  """Writes the arrays to ``dest`` atomically (temp dir + rename); warns on failure."""
  tmp = None
  try:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = stale.make_temp_dir(dest.parent, ".decoded", PARTIAL)
    for split, (images, labels) in arrays.items():
      np.save(tmp / f"{split}_images.npy", images)
      np.save(tmp / f"{split}_labels.npy", labels)
    (tmp / "meta.json").write_text(json.dumps({"class_names": list(class_names),
                                               "splits": sorted(arrays)}))
    os.rename(tmp, dest)
  except OSError as e:
    if not (dest / "meta.json").exists():  # else another process won the race
      log.warning("could not cache decoded images in %s: %s", dest, e)
  finally:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)


class DamagedCache(Exception):
  """A decoded cache file that cannot be read back (``path``, ``reason``): the cache is
  deleted and the images decoded again, never served."""

  def __init__(self, path: Path, reason):
    super().__init__(f"{path}: {reason}")
    self.path, self.reason = path, str(reason)


def read(dest: Path):
  """Reads a cache dir; raises ``DamagedCache(file, reason)`` on anything unreadable."""
  meta_path = dest / "meta.json"
  try:
    meta = json.loads(meta_path.read_text())
    splits, class_names = list(meta["splits"]), tuple(str(c) for c in meta["class_names"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise DamagedCache(meta_path, e) from None
  arrays = {}
  for split in splits:
    loaded = []
    for kind in ("images", "labels"):
      path = dest / f"{split}_{kind}.npy"
      try:
        loaded.append(np.load(path, allow_pickle=False))
      except (OSError, ValueError, EOFError) as e:  # numpy: "Failed to read all data", ...
        raise DamagedCache(path, e) from None
    images, labels = loaded
    if not (images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3):
      raise DamagedCache(dest / f"{split}_images.npy",
                          f"expected uint8 [N, H, W, 3], got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1] or labels.dtype != np.int32:
      raise DamagedCache(dest / f"{split}_labels.npy",
                          f"expected int32 [{images.shape[0]}], got {labels.dtype} {labels.shape}")
    arrays[split] = (images, labels)
  return class_names, arrays


def load(dest: Path):
  """``(class_names, {split: (images, labels)})`` from a cache dir, or None when there is
  none. A damaged cache is deleted (with a warning naming the bad file) and None
  returned, so the caller decodes the images again and rewrites it."""
  if not (dest / "meta.json").exists():
    return None
  try:
    return read(dest)
  except DamagedCache as e:
    # fdjax's own warning line (warnings.warn printed Python's format, another file's
    # name and a source line)
    log.warning("decoded image cache file %s is damaged (%s); deleting %s and decoding the "
                "images again", e.path, e.reason, dest)
    discard(dest)
    return None


def discard(dest: Path) -> None:
  """Deletes ``dest``: renamed aside first, so a concurrent reader never sees it half gone."""
  try:
    aside = stale.make_temp_dir(dest.parent, ".damaged", PARTIAL)
  except OSError:
    return
  try:
    os.rename(dest, aside / "old")
  except OSError:  # e.g. another process discarded it first
    pass
  finally:
    shutil.rmtree(aside, ignore_errors=True)


def drop_older_versions(cache: Path) -> None:
  """Deletes the ``decoded-v<n>`` folders beside ``cache`` (a ``decoded-v<m>`` folder)
  with n < m: arrays decoded by an older fdjax, never read again. A newer version's is
  left alone: another checkout sharing the cache root still reads it (each deleting the
  other's made two versions decode their archives anew at every run)."""
  prefix = DECODED.rsplit("-v", 1)[0] + "-v"
  own = cache.name[len(prefix):]
  if not (cache.name.startswith(prefix) and own.isdigit()):
    return
  for old in cache.parent.glob(prefix + "*"):
    version = old.name[len(prefix):]
    if version.isdigit() and int(version) < int(own) and old.is_dir():
      shutil.rmtree(old, ignore_errors=True)
