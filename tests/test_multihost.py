"""Multi-host runs on JAX's multi-controller runtime, simulated by local CPU processes.

Two processes with 2 CPU devices each (``jax.distributed`` on localhost, gloo
collectives) train with the engine and must match one process with 4 simulated devices
(the reference), resume exactly from their own checkpoint, and write metrics.jsonl once.
The training itself runs in ``tests/multihost_check.py`` (a device count is fixed when
JAX starts, hence the subprocesses); all three processes run at the same time.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import with_xla_flags

SCRIPT = Path(__file__).with_name("multihost_check.py")
TIMEOUT_S = 300


def _gloo_available() -> bool:
  from jax._src.lib import _jax
  return hasattr(_jax, "make_gloo_tcp_collectives")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(role: str, devices: int, port: int, workdir: Path) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=with_xla_flags(f"--xla_force_host_platform_device_count={devices}"))
  return subprocess.Popen([sys.executable, str(SCRIPT), role, str(port), str(workdir)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """``(single, [process 0, process 1])`` npz contents, and the workdir."""
  if not _gloo_available():
    pytest.skip("this jaxlib has no gloo CPU collectives (jax._src.lib._jax."
                "make_gloo_tcp_collectives)")
  workdir = tmp_path_factory.mktemp("multihost")
  port = _free_port()
  procs = [_start("single", 4, 0, workdir), _start("0", 2, port, workdir),
           _start("1", 2, port, workdir)]
  try:
    outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0 and "OK" in out, out[-4000:]
  load = lambda name: dict(np.load(workdir / name))  # noqa: E731
  return load("single.0.npz"), [load("multi.0.npz"), load("multi.1.npz")], workdir


def _weights(npz: dict, run: str) -> dict:
  return {k[len(run):]: v for k, v in npz.items() if k.startswith(run + "[")}


@pytest.mark.parametrize("run", ["first", "full"])
def test_two_processes_train_like_one_process_on_four_devices(runs, run):
  single, (p0, p1), _ = runs
  reference, multi = _weights(single, run), _weights(p0, run)
  assert set(multi) == set(reference) and len(reference) == 8   # conv, BN, dense params; BN mean, var
  start = _weights(single, "first")
  for name, expected in reference.items():
    np.testing.assert_allclose(multi[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(_weights(p1, run)[name], multi[name])  # replicated alike
  if run == "full":  # 11 more steps really moved the weights: the comparison is not vacuous
    assert max(np.max(np.abs(reference[k] - start[k])) for k in reference) > 0.05


def test_two_process_run_resumes_exactly_from_its_checkpoint(runs):
  _, (p0, _), workdir = runs
  full, resumed = _weights(p0, "full"), _weights(p0, "resumed")
  for name in full:
    np.testing.assert_array_equal(resumed[name], full[name], err_msg=name)
  steps = sorted(int(d) for d in os.listdir(workdir / "multi" / "resumed" / "checkpoints"))
  assert steps == [4, 8, 12]


def test_a_sigterm_on_one_process_stops_both_at_one_step_and_resumes_exactly(runs):
  _, (p0, p1), _ = runs
  stop = int(p0["preempted_step"])
  assert int(p1["preempted_step"]) == stop and 2 <= stop < 12   # agreed, not before the signal
  assert str(p1["preempted_reason"]) == str(p0["preempted_reason"]) == "preemption notice"
  assert int(p0["preempted_saved"]) == stop   # the newest checkpoint when it stopped
  full, resumed = _weights(p0, "full"), _weights(p0, "preempted")
  for name in full:
    np.testing.assert_array_equal(resumed[name], full[name], err_msg=name)
    np.testing.assert_array_equal(_weights(p1, "preempted")[name], resumed[name])


def test_the_time_limit_stops_every_process_at_one_step(runs):
  _, (p0, p1), _ = runs
  assert int(p0["timed_step"]) == int(p1["timed_step"]) < 12
  assert (str(p0["timed_reason"]), str(p1["timed_reason"])) == ("time limit", "preemption notice")


def test_sharded_evaluation_and_process_zero_metrics(runs):
  single, (p0, p1), workdir = runs
  # multihost_check.py also asserts each process's accuracy against an unbatched forward pass.
  assert float(p0["accuracy"]) == float(p1["accuracy"]) == float(single["accuracy"])
  lines = (workdir / "multi" / "full" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [4, 8, 12]   # once, not per process


def test_a_one_process_run_is_left_alone(monkeypatch):
  from fdjax import distributed
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(distributed, "on_cloud_tpu_vm", lambda: False)   # (true on a TPU VM)
  assert distributed.initialize("auto") is False
  assert distributed.initialize("auto", num_processes=1) is False
  assert distributed.initialize("off", "localhost:1234", 2, 0) is False


def test_a_jax_that_moved_its_tpu_vm_detection_says_so(monkeypatch):
  # The detection reads a private attribute of JAX; without it an auto run on a
  # multi-host slice would run each host alone, silently.
  import types

  from absl import logging as absl_logging

  from fdjax import distributed
  from jax._src import cloud_tpu_init
  assert isinstance(cloud_tpu_init.running_in_cloud_tpu_vm, bool)   # what this JAX has
  warnings = []
  monkeypatch.setattr(absl_logging, "warning", lambda msg, *a: warnings.append(msg % a))
  moved = types.ModuleType("jax._src.cloud_tpu_init")   # the module without the attribute
  monkeypatch.setitem(sys.modules, "jax._src.cloud_tpu_init", moved)
  monkeypatch.setattr(sys.modules["jax._src"], "cloud_tpu_init", moved)
  assert distributed.on_cloud_tpu_vm() is False
  assert len(warnings) == 1 and "--distributed=on" in warnings[0]


@pytest.mark.parametrize("env, match", [
    ({"JAX_NUM_PROCESSES": "two"}, r"\$JAX_NUM_PROCESSES must be an integer"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, r"process_id must be in \[0, "),
    ({"JAX_NUM_PROCESSES": "0"}, "num_processes must be >= 1"),
    ({"JAX_PROCESS_ID": "1"}, "process_id 1 was given without the number of processes"),
])
def test_bad_process_settings_are_one_line_errors(monkeypatch, env, match):
  from fdjax import distributed
  from fdjax.errors import ConfigError
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(ConfigError, match=match):
    distributed.initialize("auto")
  assert distributed.initialize("off") is False   # 'off' reads none of them


def test_one_process_holds_every_row_and_batches_as_before():
  from fdjax.data import ImageSet, batching
  from fdjax.train import data_sharding, make_mesh
  sharding = data_sharding(make_mesh())
  np.testing.assert_array_equal(batching.process_rows(sharding, 8), np.arange(8))
  images = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
  split = ImageSet(images, np.arange(5, dtype=np.int32) + 1)
  last = list(batching.eval_batches(split, 4, sharding=sharding))[-1]   # row 4, 3 padding
  np.testing.assert_array_equal(np.asarray(last["mask"]), [True, False, False, False])
  np.testing.assert_array_equal(np.asarray(last["label"]), [5, 0, 0, 0])
  np.testing.assert_array_equal(np.asarray(last["image"])[0], images[4])
  assert not np.asarray(last["image"])[1:].any()


def test_on_lets_jax_detect_the_process_count_a_process_id_leaves_out(monkeypatch):
  """'auto' refuses a process id without a count (it joined nothing); 'on' hands it to
  jax.distributed.initialize, whose cluster detection (Slurm, Kubernetes) fills it in."""
  import jax
  from fdjax import distributed
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  monkeypatch.setattr(distributed, "_initialized", False)
  for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  assert distributed.initialize("on", process_id=1) is True
  assert calls == [{"coordinator_address": None, "num_processes": None, "process_id": 1}]
