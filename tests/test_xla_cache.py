"""The persistent compilation cache switch of ``python -m fdjax.main``."""

import os
import subprocess
import sys

from fdjax import xla_cache

SCRIPT = """
import sys, jax, jax.numpy as jnp
from fdjax import xla_cache
assert xla_cache.enable(sys.argv[1]) == sys.argv[1]
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
print(float(jax.jit(lambda x: (jnp.sin(x) @ jnp.cos(x).T).sum())(jnp.ones((64, 64)))))
"""


def test_resolve_settings(tmp_path, monkeypatch):
  monkeypatch.setenv("FDJAX_CACHE", str(tmp_path / "root"))
  assert xla_cache.resolve("auto") == str(tmp_path / "root" / "xla")
  assert xla_cache.resolve(None) == str(tmp_path / "root" / "xla")
  for off in ("none", "off", "", "None"):
    assert xla_cache.resolve(off) is None
  assert xla_cache.resolve(str(tmp_path / "x")) == str(tmp_path / "x")


def test_enable_stores_compiled_programs_and_a_rerun_agrees(tmp_path):
  """JAX reads its cache settings at the first compilation, hence fresh processes."""
  path = str(tmp_path / "xla")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run = lambda: subprocess.run([sys.executable, "-c", SCRIPT, path], env=env,
                               capture_output=True, text=True, timeout=120)
  first = run()
  assert first.returncode == 0, first.stderr[-2000:]
  entries = sorted(os.listdir(path))
  assert any(name.endswith("-cache") for name in entries), entries
  second = run()
  assert second.returncode == 0 and second.stdout == first.stdout, second.stderr[-2000:]
  assert "Error reading persistent compilation cache" not in first.stderr + second.stderr


def test_a_folder_this_user_cannot_write_leaves_the_cache_off(tmp_path, monkeypatch, caplog):
  """JAX needs a lock file beside the entries even to read them: a read-only shared
  cache gave about 40 warnings and no cache. (os.access is patched: root writes anywhere.)"""
  import logging

  import jax

  before = jax.config.jax_compilation_cache_dir
  monkeypatch.setattr(xla_cache.os, "access", lambda path, mode: False)
  with caplog.at_level(logging.WARNING):
    assert xla_cache.enable(str(tmp_path / "shared")) is None
  assert jax.config.jax_compilation_cache_dir == before
  assert [r.getMessage() for r in caplog.records if "not writable" in r.getMessage()]
