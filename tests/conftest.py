"""Fixtures shared by the test files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The suite compiles far more than it computes (tiny models, a few steps each), and most
# of XLA:CPU's compile time is LLVM optimising the generated loops: level 0 skips that
# (convolutions and matmuls still run in Eigen/oneDNN's own compiled kernels). Measured
# in BUILD_NOTES.md ("Test suite"). Appended to the caller's XLA_FLAGS, before any test
# module starts JAX; subprocesses inherit it through ``with_xla_flags``.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def with_xla_flags(flags: str) -> str:
  """This process's XLA_FLAGS (the suite's own included) followed by ``flags``."""
  return f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


os.environ["XLA_FLAGS"] = with_xla_flags(TEST_XLA_FLAGS)


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


def pytest_collection_modifyitems(config, items):
  """Tests marked ``long`` (integration runs of 20 s or more whose behaviour also has a
  faster test in the default run) run only with ``FDJAX_SLOW_TESTS=1``, so that the
  default suite stays within its time budget on a slow 2-core CI machine."""
  if os.environ.get(LONG_TESTS_ENV):
    return
  skip = pytest.mark.skip(reason=f"long integration test; set {LONG_TESTS_ENV}=1 to run it")
  for item in items:
    if "long" in item.keywords:
      item.add_marker(skip)
