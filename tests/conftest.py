"""Fixtures shared by the test files."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fdjax import cpu_flags

# The suite compiles far more than it computes (tiny models, a few steps each), and most
# of XLA:CPU's compile time is LLVM optimising the generated loops: level 0 skips that
# (convolutions and matmuls still run in Eigen/oneDNN's own compiled kernels). Measured
# in BUILD_NOTES.md ("Test suite"). Appended to the caller's XLA_FLAGS, before any test
# module starts JAX; subprocesses inherit it through ``with_xla_flags``.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"

# jaxlib 0.10's XLA:CPU compiles the suite's programs about a third faster with its older
# LLVM IR emitters for fusions than with its default MLIR fusion emitters (the whole
# suite 4m12s against 6m20s, back to back on the 2-core CPU: BUILD_NOTES.md, "Test
# suite"). Only on the jaxlib versions where that was measured and with no accelerator
# plugin in use (``fdjax.cpu_flags.accelerator_in_use``): XLA aborts on a flag it does not
# know, jaxlib 0.12 (Python 3.12 and later) has dropped this one, and a plugin's own XLA
# (libtpu's) may not know it.
OLD_FUSION_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
OLD_FUSION_EMITTERS_JAXLIB = ((0, 10),)


def suite_xla_flags(xla_flags: str, jaxlib_version: str | None,
                    accelerator: bool = False) -> str:
  """The flags this suite adds to ``xla_flags`` (the caller's XLA_FLAGS, which win: a flag
  they already set is not set again) under ``jaxlib_version``, with or without an
  accelerator plugin in use (``accelerator``)."""
  added = [TEST_XLA_FLAGS]
  if (not accelerator
      and cpu_flags.jaxlib_minor(jaxlib_version) in OLD_FUSION_EMITTERS_JAXLIB):
    added.append(OLD_FUSION_EMITTERS)
  return " ".join(flag for flag in added if not cpu_flags.sets_flag(xla_flags, flag))


def with_xla_flags(flags: str) -> str:
  """This process's XLA_FLAGS (the suite's own included) followed by ``flags``."""
  return f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


os.environ["XLA_FLAGS"] = with_xla_flags(
    suite_xla_flags(os.environ.get("XLA_FLAGS", ""), cpu_flags.installed_jaxlib(),
                    cpu_flags.accelerator_in_use(os.environ)))

# fdjax's cache root (extracted archives, decoded images, compiled programs) for this
# session only, removed at its end: a load without ``cache_dir`` (tests that use the
# shared data as a user's load would) left hundreds of MB in the user's own
# ``~/.cache/fdjax`` at every new archive key. Subprocesses inherit it.
SESSION_CACHE = tempfile.mkdtemp(prefix="fdjax-test-cache-")
atexit.register(shutil.rmtree, SESSION_CACHE, ignore_errors=True)
os.environ["FDJAX_CACHE"] = SESSION_CACHE


def _run_on_eight_cpu_devices(script: str, expected: str) -> str:
  """Runs ``tests/<script>`` in a fresh Python on 8 simulated CPU devices (the device count
  is fixed when JAX starts, hence the subprocess); asserts that it exits 0 and prints
  ``expected``. Returns its stdout."""
  env = dict(os.environ, XLA_FLAGS=with_xla_flags("--xla_force_host_platform_device_count=8"),
             JAX_PLATFORMS="cpu")
  path = Path(__file__).with_name(script)
  result = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert expected in result.stdout
  return result.stdout


@pytest.fixture
def run_on_eight_cpu_devices():
  """``run(script, expected)``: see ``_run_on_eight_cpu_devices``."""
  return _run_on_eight_cpu_devices


@pytest.fixture(autouse=True)
def _restore_absl_verbosity():
  """Tests that run a command line in-process (``console.start_cli``) lower absl's
  verbosity; restore it so that log-reading tests do not depend on which tests ran
  before them in the same worker."""
  from absl import logging

  logger = logging.get_absl_logger()
  level = logger.level   # the logger's own level (NOTSET before absl parses its flags)
  yield
  logger.setLevel(level)


LONG_TESTS_ENV = "FDJAX_SLOW_TESTS"


# The files that take longest (seconds in the suite, 2-core CPU, BUILD_NOTES "Test
# suite"), run first: the workers take files in collection order (``--dist loadfile
# --no-loadscope-reorder`` in pyproject.toml), so the long ones start at once and the
# short ones fill the end instead of one worker running the end-to-end file alone.
LONGEST_FILES = ("test_main_e2e.py", "test_restoration_study.py", "test_moe.py",
                 "test_bf16.py", "test_degradations.py", "test_shared_expert_step.py",
                 "test_sharding.py", "test_train.py", "test_multihost.py")


def _file_rank(item) -> int:
  name = os.path.basename(str(item.fspath))
  return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)


def pytest_collection_modifyitems(config, items):
  """Orders the longest files first (stable: every file keeps its tests' order).
  Tests marked ``long`` (integration runs of 20 s or more whose behaviour also has a
  faster test in the default run) run only with ``FDJAX_SLOW_TESTS=1``, so that the
  default suite stays within its time budget on a slow 2-core CI machine."""
  items.sort(key=_file_rank)
  if os.environ.get(LONG_TESTS_ENV, "").strip() not in ("", "0"):
    return
  skip = pytest.mark.skip(reason=f"long integration test; set {LONG_TESTS_ENV}=1 to run it")
  for item in items:
    if "long" in item.keywords:
      item.add_marker(skip)
