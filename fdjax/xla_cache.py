"""JAX's persistent compilation cache for fdjax runs: a rerun (or a resumed run) loads
the compiled train steps and predictors from disk instead of compiling them again.

``python -m fdjax.main`` turns it on by default under ``<fdjax cache>/xla`` (the cache
root of ``fdjax.data.archive.cache_root``: ``$FDJAX_CACHE`` or ``~/.cache/fdjax``);
``--xla_cache=<dir>`` moves it and ``--xla_cache=none`` turns it off. A first run on a
fresh machine compiles everything either way; the cache only helps the runs after it.
A folder this user cannot write (a shared read-only cache) is left off with one warning
line: JAX cannot even read its entries there (it takes a lock file beside them), and
said so in a warning per compilation.
"""

from __future__ import annotations

import os

import jax
from absl import logging

from fdjax.data.archive import cache_root

OFF = ("", "none", "off")
# Only compilations that took at least this long are stored (tiny jits are cheaper to
# recompile than to read back), and the folder is kept under MAX_BYTES (least recently
# used entries are evicted by JAX).
MIN_COMPILE_SECONDS = 0.2
MAX_BYTES = 2 * 1024**3


def resolve(setting: str | None) -> str | None:
  """``'auto'`` / None -> ``<cache root>/xla``; ``'none'`` / ``'off'`` / '' -> None (off);
  anything else is a folder path (``~`` expanded)."""
  if setting is None or setting == "auto":
    return str(cache_root() / "xla")
  if setting.strip().lower() in OFF:
    return None
  return os.path.expanduser(setting)


def enable(setting: str | None = "auto") -> str | None:
  """Points JAX's persistent compilation cache at ``resolve(setting)``; returns the
  folder (None when off, or when the folder is not writable: module docstring). Call
  before the first compilation."""
  path = resolve(setting)
  if path is None:
    return None
  from fdjax.lock import make_folder

  make_folder(path, "--xla_cache")
  if not os.access(path, os.W_OK | os.X_OK):
    logging.warning("--xla_cache %s is not writable: compiled programs are not cached "
                    "(pass --xla_cache=<a folder you can write> or --xla_cache=none)", path)
    return None
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
  jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
  return path
