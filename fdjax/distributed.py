"""Multi-process (multi-host) runs on JAX's multi-controller runtime.

Every process runs the same command (``python -m fdjax.main ...``) on its own host;
``initialize()`` joins them into one JAX runtime before anything touches a device, so
``jax.devices()`` lists every process's devices and the mesh spans all of them. Each
process then batches only its own rows of every global batch (``fdjax.data.batching``),
checkpoints are written and read collectively by orbax, and files meant for people
(metrics, reports, plots) are written by process 0 only (``is_main_process``).

When is a run multi-process (``mode``; ``fdjax.main``'s ``--distributed`` flag):

* ``'auto'`` (default): when a coordinator address or more than one process is given
  (``--coordinator_address``/``--num_processes``, or the environment variables
  ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``; ``--process_id``/``JAX_PROCESS_ID``
  names this process, and here without a process count is an error), or on a Cloud TPU VM
  (JAX detects the slice's hosts itself). Otherwise nothing is done and the run is the
  plain one-process run.
* ``'on'``: always ``jax.distributed.initialize`` (what is not given is auto-detected by
  JAX: Cloud TPU, Slurm, Open MPI, Kubernetes).
* ``'off'``: never (the process settings and variables are then not read).

Every process must run the same config on the same code and data: ``check_same``
compares digests across processes (``fdjax.pipeline``: the config, then every stage's
fingerprint) and stops them all with one error where they differ.

Every process must see the same workdir, at the same path (NFS, Cloud Filestore, a
bucket mounted with gcsfuse): orbax writes each process's shards into the same
checkpoint, and every process reads the files process 0 wrote (stage fingerprints,
evaluation caches). ``check_shared_directory`` refuses a workdir that is not. fdjax
writes its own files with plain file I/O, so a ``gs://`` URL is not a workdir.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Callable, TypeVar

import jax
import numpy as np
from absl import logging

from fdjax.errors import ConfigError

MODES = ("auto", "on", "off")
T = TypeVar("T")

_initialized = False


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value in (None, ""):
    return None
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"${name} must be an integer, got {value!r}") from None


def on_cloud_tpu_vm() -> bool:
  """True on a Cloud TPU VM with libtpu (what JAX itself found when it was imported)."""
  try:
    from jax._src import cloud_tpu_init
  except ImportError:  # a future JAX moved it: no auto-detection, flags still work
    cloud_tpu_init = None
  if not hasattr(cloud_tpu_init, "running_in_cloud_tpu_vm"):
    logging.warning("this JAX no longer says whether it runs on a Cloud TPU VM "
                    "(jax._src.cloud_tpu_init.running_in_cloud_tpu_vm): on a multi-host "
                    "slice pass --distributed=on, or each host runs alone")
    return False
  return bool(cloud_tpu_init.running_in_cloud_tpu_vm)


def initialize(mode: str = "auto", coordinator_address: str | None = None,
               num_processes: int | None = None, process_id: int | None = None) -> bool:
  """Joins this process to a multi-process run if ``mode`` says so; returns whether it did.

  Arguments left ``None`` fall back to ``$JAX_COORDINATOR_ADDRESS``, ``$JAX_NUM_PROCESSES``
  and ``$JAX_PROCESS_ID``, then to JAX's own cluster detection. Must run before anything
  touches a device (``jax.devices()``, an array); a second call does nothing.
  """
  global _initialized
  if mode not in MODES:
    raise ConfigError(f"distributed mode must be one of {MODES}, got {mode!r}")
  if _initialized:
    return True
  if mode == "off":
    return False
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
  process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
  if num_processes is not None and num_processes < 1:
    raise ConfigError(f"num_processes must be >= 1, got {num_processes}")
  if process_id is not None and not 0 <= process_id < (num_processes or process_id + 1):
    raise ConfigError(f"process_id must be in [0, num_processes), got {process_id} of "
                      f"{num_processes}")
  if mode == "auto" and process_id is not None and num_processes is None:
    # Alone it joined nothing: this host ran as a one-process "process 0" beside the
    # others, writing into the shared workdir ('on' lets JAX detect the count).
    raise ConfigError(f"process_id {process_id} was given without the number of processes: "
                      "set --num_processes (or $JAX_NUM_PROCESSES) on every host as well")
  given = coordinator_address is not None or (num_processes or 1) > 1
  if mode == "auto" and not given and not on_cloud_tpu_vm():
    return False
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  _initialized = True
  return True


def process_index() -> int:
  """This process's index (0 in a one-process run)."""
  return jax.process_index()


def process_count() -> int:
  return jax.process_count()


def is_main_process() -> bool:
  """True in the process that writes files for people (metrics, reports, plots, logs)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reached ``barrier(name)`` (nothing in a one-process run).

  Put one where files written by process 0 are read next by every process (the end of
  a stage, the reports)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def write_once(write: Callable[[], T], name: str) -> T | None:
  """Runs ``write()`` (which writes files) in process 0 only, then waits for every process.

  Returns ``write()``'s result in process 0, None elsewhere. After it returns, every
  process sees the files, so decisions taken on them (a cached result exists, a stage is
  done) are the same in every process and no collective step is skipped by some only.
  In a one-process run this is just ``write()``.

  If ``write()`` raises, every process raises: process 0 its own exception, the others a
  ``ConfigError`` that points to process 0's console. (Before, process 0 exited alone and
  the others waited at the next collective until JAX's shutdown barrier aborted them,
  five minutes later.)
  """
  if jax.process_count() == 1:
    return write()
  from jax.experimental import multihost_utils
  result, error = None, None
  if is_main_process():
    try:
      result = write()
    except BaseException as e:  # noqa: BLE001 (re-raised below, after the others know)
      error = e
  failed = np.asarray(multihost_utils.process_allgather(np.int32(error is not None)))
  if error is not None:
    raise error
  if failed.any():
    raise ConfigError(f"process 0 failed at '{name}' (its console says why); this process "
                      "stops with it")
  return result


SHARED_CHECK_FILE = ".fdjax.shared"


def check_shared_directory(path: str) -> None:
  """Raises ``ConfigError`` unless every process sees the file process 0 writes in ``path``
  (nothing to check in a one-process run). Creates ``path``."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  nonce = int(multihost_utils.broadcast_one_to_all(np.int32(secrets.randbits(31))))
  marker = os.path.join(path, SHARED_CHECK_FILE)

  def write():
    os.makedirs(path, exist_ok=True)
    with open(marker, "w") as f:
      f.write(str(nonce))

  write_once(write, "shared directory check")  # one name: the paths may differ
  try:
    with open(marker) as f:
      seen = f.read().strip() == str(nonce)
  except OSError:
    seen = False
  everyone = np.asarray(multihost_utils.process_allgather(np.int32(seen))).reshape(-1)
  blind = [i for i, ok in enumerate(everyone) if not ok]
  if blind:
    raise ConfigError(
        f"workdir {path} is not shared by all {len(everyone)} processes: process(es) "
        f"{', '.join(map(str, blind))} do not see the file process 0 wrote there; use a path "
        f"every host mounts (NFS, Filestore, a gcsfuse-mounted bucket)")


def check_same(what: str, text: str) -> None:
  """Raises ``ConfigError`` in every process unless all processes passed the same
  ``text`` (nothing to check in a one-process run). Every host starts its own command, so
  a stale checkout, an edited config file or another flag on one host would otherwise
  train with other settings there, silently, while process 0 records its own."""
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], np.int32)
  everyone = np.asarray(multihost_utils.process_allgather(digest)).reshape(-1, 2)
  differ = [i for i, row in enumerate(everyone) if not np.array_equal(row, everyone[0])]
  if differ:
    raise ConfigError(
        f"the {len(everyone)} processes disagree on {what}: process(es) "
        f"{', '.join(map(str, differ))} differ from process 0",
        hint="start every host with the same command, on the same code and data")
