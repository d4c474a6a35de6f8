"""A train step on 8 simulated CPU devices equals the 1-device step (separate process,
since the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
from pathlib import Path


def test_eight_device_step_equals_one_device_step():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  script = Path(__file__).with_name("sharding_check.py")
  result = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "OK 1-device vs 8-device" in result.stdout
