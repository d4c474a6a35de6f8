"""``folder:<path>``: an image-folder tree, or a .tar.gz / .tgz / .tar archive of one.

Layout: ``<root>/<split>/<class>/<image>`` with splits ``train``, ``test`` and
optionally ``validation`` (or ``val``). An archive (or folder) whose only entry is one
folder wrapping the splits is unwrapped. Class index = position of the class name in
the sorted list of the train split's class folders; other splits may only use those
classes. Images are decoded with PIL to RGB uint8 (grey, palette and RGBA converted)
and must all share one size. Hidden files and folders (``.*``, ``__MACOSX``) are
ignored; other entries that are not images of a class folder (files without an image
extension, sub-folders of a class, files beside the class folders, top-level folders
that are not splits) are left out with a warning naming some of them.

Decoded arrays are cached as ``.npy`` (``decoded-v3/``): next to the extraction for
archives (see ``fdjax.data.archive``), and under
``<cache root>/<folder name>-dir-<listing hash>/`` for plain folders, so a second load
only reads the arrays (a folder's cache records the folder's path in ``origin``; the
caches of its earlier listings are deleted once a day has passed without a run touching
them, ``archive.record_origin``). Loads that ask for a subset (``max_per_split``) decode just
that subset and do not write the cache, but do read a cache that exists. A cache is
written into a temporary ``.decoded@<host>@<pid>@<random>.partial`` directory and
renamed into place; such directories left by killed runs are deleted at the next load
(``fdjax.data.stale``). A cache that cannot be read back (a truncated or damaged
``.npy``, arrays of the wrong shape) is reported with a warning naming the file,
deleted, and rebuilt from the images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
import unicodedata
from pathlib import Path

import numpy as np

from fdjax.data import _decode, archive, decoded_cache, paths, stale
from fdjax.data.splits import RawSource, in_memory_source
from fdjax.errors import DataError, MissingDataError

SPLIT_DIRS = {"train": "train", "test": "test", "validation": "validation", "val": "validation"}
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm",
                              ".pbm", ".tif", ".tiff"})

log = logging.getLogger(__name__)


def nfc(name: str) -> str:
  """``name`` in Unicode normal form C: file systems differ (macOS writes NFD), and a
  class or pair name must mean one thing on both."""
  return unicodedata.normalize("NFC", name)


@dataclasses.dataclass(frozen=True)
class Tree:
  """A scanned image-folder tree: per split, file paths (sorted by class, then name)."""

  root: Path
  class_names: tuple[str, ...]
  files: dict[str, list[str]]
  labels: dict[str, np.ndarray]  # int32 [N] per split, aligned with files

  def fingerprint(self) -> str:
    """Short hash of every file's relative path, size, modification time and status
    change time: a file rewritten with its size and its modification time restored
    (``cp -p``, ``rsync -t`` of an edited file) changes the last, which no one sets (moving
    the folder changes none of its files')."""
    h = hashlib.sha1()
    for split in sorted(self.files):
      for path in self.files[split]:
        st = os.stat(path)
        h.update(f"{os.path.relpath(path, self.root)}:{st.st_size}:{st.st_mtime_ns}:"
                 f"{st.st_ctime_ns}\n".encode())
    return h.hexdigest()[:12]


def _visible_dirs(path: Path) -> list[str]:
  return sorted(e.name for e in os.scandir(path)
                if e.is_dir() and not e.name.startswith(".") and e.name != "__MACOSX")


def find_root(path: Path, max_depth: int = 3) -> Path:
  """Descends through folders that only wrap a single folder until splits appear."""
  for _ in range(max_depth):
    dirs = _visible_dirs(path)
    if len(dirs) != 1 or dirs[0] in SPLIT_DIRS:
      break
    path = path / dirs[0]
  return path


def scan(root: Path) -> Tree:
  """Lists ``root/<split>/<class>/<image>``; raises on a malformed tree."""
  dirs = _visible_dirs(root)
  split_dirs: dict[str, Path] = {}
  for d in dirs:
    if d in SPLIT_DIRS:
      split = SPLIT_DIRS[d]
      if split in split_dirs:
        raise DataError(f"{root} has both {split_dirs[split].name!r} and {d!r} folders; keep one")
      split_dirs[split] = root / d
  others = [d for d in dirs if d not in SPLIT_DIRS]
  if others:
    log.warning("%s: folders %s are not splits and are left out (splits: %s)", root,
                others, ", ".join(SPLIT_DIRS))
  for split in ("train", "test"):
    if split not in split_dirs:
      raise MissingDataError(
          f"image folder {root} has no {split!r} split folder; available splits: "
          f"{sorted(split_dirs)} (sub-folders: {dirs}); expected {root}/<split>/<class>/<image> "
          f"with splits train, test and optionally validation or val")
  class_names: tuple[str, ...] = ()
  files, labels = {}, {}
  for split in sorted(split_dirs, key=lambda s: s != "train"):  # train first: it names the classes
    split_dir = split_dirs[split]
    classes = _visible_dirs(split_dir)
    if not classes:
      raise DataError(f"split folder {split_dir} has no class folders; expected "
                       f"{split_dir}/<class>/<image>")
    if split == "train":   # names in NFC: a macOS archive's NFD 'café' is Linux's 'café'
      class_names = tuple(sorted(nfc(c) for c in classes))
    elif extra := sorted({nfc(c) for c in classes} - set(class_names)):
      raise DataError(f"split folder {split_dir} has classes {extra} that the train split "
                       f"{split_dirs['train']} lacks")
    paths, labs = [], []
    skipped = [f"{e.name}" for e in os.scandir(split_dir)   # files beside the classes
               if e.is_file() and not e.name.startswith(".")]
    for name in classes:
      class_dir = split_dir / name
      entries = [e for e in os.scandir(class_dir) if not e.name.startswith(".")]
      images = sorted(e.name for e in entries
                      if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)
      skipped += sorted(f"{name}/{e.name}" + ("/" if e.is_dir() else "") for e in entries
                        if e.name not in images)
      if not images:
        inner = sorted(e.name + "/" for e in entries if e.is_dir())
        raise DataError(f"class folder {class_dir} contains no images (extensions: "
                         f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
                         + (f"; it holds the sub-folders {inner[:5]}, which are not searched: "
                            f"images go directly in the class folder" if inner else ""))
      paths.extend(str(class_dir / f) for f in images)
      labs.extend([class_names.index(nfc(name))] * len(images))
    if skipped:
      log.warning("%s: %d entries are not images of a class folder and are left out, e.g. "
                  "%s (images: %s/<class>/<file> with extensions %s)", split_dir,
                  len(skipped), skipped[:3], split_dir, ", ".join(sorted(IMAGE_EXTENSIONS)))
    files[split], labels[split] = paths, np.asarray(labs, np.int32)
  return Tree(root, class_names, files, labels)


def _reader(tree: Tree, cache: Path, origin: str | None = None):
  """``RawSource.read_images`` for ``tree``: decodes (and caches when complete; a
  folder's cache then records its ``origin``, ``archive.record_origin``)."""

  def read_images(needed):
    ref_path = tree.files["train"][0]
    full = all(idx is None for idx in needed.values())
    order = sorted(tree.files if full else needed)  # a complete load decodes every split
    picks = {s: tree.files[s] if needed.get(s) is None else [tree.files[s][i] for i in needed[s]]
             for s in order}
    start = time.perf_counter()
    try:
      flat = _decode.decode_parallel([p for s in order for p in picks[s]], ref_path,
                                     _decode.image_size(ref_path))
    except ValueError as e:  # an unreadable image or a size mismatch, naming the files
      raise DataError(str(e)) from None
    log.info("decoded %d images from %s in %.1f s", len(flat), tree.root,
             time.perf_counter() - start)
    bounds = np.cumsum([0] + [len(picks[s]) for s in order])
    images = {s: flat[bounds[i]:bounds[i + 1]] for i, s in enumerate(order)}
    if full:
      decoded_cache.save(cache, {s: (images[s], tree.labels[s]) for s in order}, tree.class_names)
      if origin is not None and (cache / "meta.json").exists():
        archive.record_origin(cache.parent, origin)
    return {s: images[s] for s in needed}

  return read_images


def source(path_arg: str, *, cache_dir: str | None = None) -> RawSource:
  """Opens ``folder:<path_arg>`` (a directory or an archive) as a lazy ``RawSource``. A
  relative path is the current folder's, else the repository's (the shipped configs'
  ``folder:../shared/...``: ``fdjax.data.paths``)."""
  path = paths.find(path_arg)
  if not path.exists():
    raise MissingDataError(f"folder source {path_arg!r}: {paths.not_found(path_arg)}")
  root = archive.cache_root(cache_dir)
  if path.is_file():
    if not archive.is_archive(path):
      raise DataError(f"folder source {path_arg!r}: {path} is a file but not an archive "
                       f"({', '.join(archive.SUFFIXES)}) or a directory")
    name = archive.stem(path)
    entry = archive.entry_dir(path, root)
    cache = entry / decoded_cache.DECODED
    if entry.is_dir():
      decoded_cache.drop_older_versions(cache)
      stale.remove_stale(entry, ".", decoded_cache.PARTIAL)
    cached = decoded_cache.load(cache)   # enough without the extracted tree (a user may delete it)
    if cached is None:
      archive.extract(path, root)
    else:
      stale.remove_stale(root, ".", decoded_cache.PARTIAL)   # as extract does
      archive.touch(entry, str(path.resolve()))   # in use: pruning spares it
    tree = None if cached else scan(find_root(entry / "tree"))
  else:
    name = path.resolve().name
    tree = scan(find_root(path))
    cache = root / f"{name}-dir-{tree.fingerprint()}" / decoded_cache.DECODED
    decoded_cache.drop_older_versions(cache)
    stale.remove_stale(cache.parent, ".", decoded_cache.PARTIAL)
    cached = decoded_cache.load(cache)
    if cached is not None:
      archive.touch(cache.parent, str(path.resolve()))   # in use: pruning spares it
  if cached is not None:
    class_names, arrays = cached
    return in_memory_source(name, class_names, arrays)
  origin = None if path.is_file() else str(path.resolve())
  return RawSource(name, tree.class_names, tree.labels, _reader(tree, cache, origin))
