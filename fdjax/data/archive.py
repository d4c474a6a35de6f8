"""Extracts image-folder archives (.tar.gz / .tgz / .tar) once into a cache directory.

Layout under the cache root (``cache_dir``, else ``$FDJAX_CACHE``, else
``~/.cache/fdjax``)::

    <archive stem>-<key>/tree/...   the extracted archive, as is
    <archive stem>-<key>/decoded-v2/  decoded arrays, written by fdjax.data.folder

``key`` hashes the archive's size, modification and status-change times, so a replaced
archive (even one copied with its size and mtime) gets a
fresh entry. Extraction is atomic: the archive is unpacked into a hidden temporary
directory ``.<stem>-<key>@<host>@<pid>@<random>.partial`` in the cache root that is
renamed to ``<stem>-<key>`` only when complete, so a crash never leaves a
half-extracted entry. Such a directory left by a killed run is never read; the next
``extract`` into the same cache root deletes it once its owner process is gone (see
``fdjax.data.stale``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

from fdjax.data import stale
from fdjax.errors import DataError

SUFFIXES = (".tar.gz", ".tgz", ".tar")
CACHE_ENV = "FDJAX_CACHE"
PARTIAL = ".partial"  # suffix of the temporary directories in the cache root


def is_archive(path: Path) -> bool:
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
  st = archive.stat()   # ctime: no copy that keeps the size and the mtime keeps it too
  key = hashlib.sha1(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}".encode()).hexdigest()[:12]
  return root / f"{stem(archive)}-{key}"


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
    return entry
  root.mkdir(parents=True, exist_ok=True)
  tmp = stale.make_temp_dir(root, f".{entry.name}", PARTIAL)
  try:
    try:
      with tarfile.open(archive) as tar:
        _safe_extract(tar, tmp / "tree")
    except (tarfile.TarError, EOFError, OSError) as e:  # incl. tarfile.FilterError
      raise DataError(f"cannot extract archive {archive}: {e}") from e
    try:
      os.rename(tmp, entry)  # atomic publish
    except OSError:
      if not (entry / "tree").is_dir():  # not a lost race with another process
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return entry
