"""Extracts image-folder archives (.tar.gz / .tgz / .tar) once into a cache directory.

Layout under the cache root (``cache_dir``, else ``$FDJAX_CACHE``, else
``~/.cache/fdjax``)::

    <archive stem>-<key>/tree/...   the extracted archive, as is
    <archive stem>-<key>/decoded-v3/  decoded arrays, written by fdjax.data.decoded_cache

``key`` hashes the archive's size, modification time and inode (not the device, which a
remount or a second container's overlay of the same file changes): a replaced
archive (a new file, even one copied with its size and mtime) gets a fresh entry, while a
``chmod`` or a ``mv`` within the file system keeps the entry (the status-change time,
hashed until 2026-12-07, changed with both and left a full copy behind each time). Each
entry records the archive's resolved path in ``<entry>/origin``; once a new entry of
that path is published, the entries it superseded (same origin, a different key, not
used for ``stale.FOREIGN_AGE_S``: every load touches its entry and rewrites its origin,
so a moved archive's entry follows it and one in use is kept) are deleted. An entry whose ``tree/`` a user deleted to save space is extracted
again in place. Extraction is atomic: the archive is unpacked into a hidden temporary
directory ``.<stem>-<key>@<host>@<pid>@<random>.partial`` in the cache root that is
renamed to ``<stem>-<key>`` only when complete, so a crash never leaves a
half-extracted entry. Such a directory left by a killed run is never read; the next
``extract`` into the same cache root deletes it once its owner process is gone (see
``fdjax.data.stale``).
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tarfile
import time
from pathlib import Path, PurePosixPath

from fdjax.data import stale
from fdjax.errors import DataError

SUFFIXES = (".tar.gz", ".tgz", ".tar")
CACHE_ENV = "FDJAX_CACHE"
PARTIAL = ".partial"  # suffix of the temporary directories in the cache root


def is_archive(path: Path) -> bool:
  """Whether ``path``'s name ends in an archive suffix (``SUFFIXES``, any case)."""
  return path.name.lower().endswith(SUFFIXES)


def stem(path: Path) -> str:
  """``cifar10-jpeg.tar.gz`` -> ``cifar10-jpeg``."""
  name = path.name
  for suffix in SUFFIXES:
    if name.lower().endswith(suffix):
      return name[:-len(suffix)]
  return path.stem


def cache_root(cache_dir: str | None = None) -> Path:
  """``cache_dir``, else ``$FDJAX_CACHE``, else ``~/.cache/fdjax``."""
  root = cache_dir or os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "fdjax")
  return Path(root).expanduser()


def entry_dir(archive: Path, root: Path) -> Path:
  """Where ``archive`` is (or will be) extracted: ``root/<stem>-<key>``."""
  st = archive.stat()   # the inode: a copy that keeps the size and the mtime differs
  key = hashlib.sha1(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}".encode()).hexdigest()[:12]
  return root / f"{stem(archive)}-{key}"


ORIGIN = "origin"   # <entry>/origin: the archive's resolved path


def touch(entry: Path, origin: str) -> bool:
  """Marks ``entry`` as used now by the archive or folder at ``origin`` (its resolved
  path): ``<entry>/origin`` rewritten when it names another path (the archive was moved:
  its entry follows it), the entry's mtime set to now (pruning spares entries in use).
  False on a read-only cache (still read: nothing recorded)."""
  path = entry / ORIGIN
  try:
    if not path.is_file() or path.read_text() != origin:
      path.write_text(origin)
    os.utime(entry)
  except OSError:
    return False
  return True


def record_origin(entry: Path, origin: str) -> None:
  """Writes ``origin`` (the resolved path of what ``entry`` caches: an archive, a folder)
  into ``<entry>/origin`` and deletes the other entries of that origin in the same cache
  root that no run has touched for ``stale.FOREIGN_AGE_S``: the caches of its earlier
  versions. ``entry``'s name is ``<prefix>-<key>``; the others share the prefix."""
  if not touch(entry, origin):   # a read-only cache: nothing recorded, nothing pruned
    return
  now = time.time()
  for other in entry.parent.glob(f"{glob.escape(entry.name.rsplit('-', 1)[0])}-*"):
    try:
      if (other == entry or not other.is_dir()
          or (other / ORIGIN).read_text() != origin
          or now - other.stat().st_mtime < stale.FOREIGN_AGE_S):
        continue
    except OSError:   # no origin file (another archive, or an older fdjax's entry)
      continue
    shutil.rmtree(other, ignore_errors=True)


def _safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
  """Extracts ``tar`` into ``dest``, refusing absolute paths, '..' and outside links."""
  if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
    tar.extractall(dest, filter="data")
    return
  for member in tar.getmembers():
    if member.name.startswith("/") or ".." in PurePosixPath(member.name).parts or not (
        member.isfile() or member.isdir()):
      raise DataError(f"refusing to extract unsafe archive member {member.name!r}")
  tar.extractall(dest)


def extract(archive: Path, root: Path) -> Path:
  """Extracts ``archive`` under ``root`` unless already there; returns the entry dir.

  The extracted files are in ``<entry>/tree``. First deletes the temporary
  directories that killed runs left in ``root`` (``stale.remove_stale``).
  """
  entry = entry_dir(archive, root)
  stale.remove_stale(root, ".", PARTIAL)
  if (entry / "tree").is_dir():
    touch(entry, str(archive.resolve()))
    return entry
  root.mkdir(parents=True, exist_ok=True)
  origin = str(archive.resolve())
  tmp = stale.make_temp_dir(root, f".{entry.name}", PARTIAL)
  try:
    try:
      with tarfile.open(archive) as tar:
        _safe_extract(tar, tmp / "tree")
    except (tarfile.TarError, EOFError, OSError) as e:  # incl. tarfile.FilterError
      raise DataError(f"cannot extract archive {archive}: {e}") from e
    try:
      if entry.is_dir():   # its tree/ deleted (decoded arrays kept): put a new one in place
        os.rename(tmp / "tree", entry / "tree")
      else:
        os.rename(tmp, entry)  # atomic publish
    except OSError as e:
      if not (entry / "tree").is_dir():  # not a lost race with another process
        raise DataError(f"cannot publish the extraction of {archive} as {entry}: {e}") from e
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  record_origin(entry, origin)
  return entry
