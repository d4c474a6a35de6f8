"""Command-line entry point.

    python -m fdjax.main --config=configs/quickstart.py --workdir=runs/quickstart

Any config field can be overridden, e.g. ``--config.clean.epochs=3``; an unknown
field is an error. Re-running with the same workdir resumes: finished stages are
reused and an interrupted one continues from its last checkpoint. Compiled steps are
kept in JAX's persistent cache (``--xla_cache``, see ``fdjax.xla_cache``).

Stopping: SIGTERM (a preemption notice, Slurm, ``timeout``), Ctrl-C or
``--time_limit=50m`` makes the stage in training save a checkpoint of the step it has
reached; the run then prints where it stopped and exits with status 75
(``EX_TEMPFAIL``), and the same command resumes from there, exactly
(``fdjax.train.stop``). A second SIGTERM or Ctrl-C stops at once.

The console shows fdjax's own lines (and every library's warnings); add
``--verbosity=1`` to see the libraries' INFO/DEBUG lines too (orbax, jax).

Multi-process (multi-host) runs: start the same command on every host; on a Cloud TPU
VM slice that is all (``launch/tpu_vm.sh``), elsewhere add ``--coordinator_address=
HOST0:PORT --num_processes=N --process_id=I`` (or set ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``); see ``fdjax.distributed``. Only process 0
prints progress and writes metrics, reports and plots.
"""

from __future__ import annotations

import os
import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

from fdjax.console import configure_logging, start_cli, write_stderr
from fdjax.errors import EXIT_USER_ERROR, cli_errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file in configs/ (a get_config() module).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
_XLA_CACHE = flags.DEFINE_string(
    "xla_cache", "auto", "JAX's persistent compilation cache: 'auto' (<fdjax cache>/xla), "
    "a folder, or 'none'. Reruns and resumed runs skip most compilation.")
flags.mark_flags_as_required(["config", "workdir"])
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", ["auto", "on", "off"],
    "Multi-process run: auto (when a coordinator or >1 processes is given below or in the "
    "environment, or on a Cloud TPU VM), on, off. See fdjax.distributed.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-process runs; default "
    "$JAX_COORDINATOR_ADDRESS).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (default $JAX_NUM_PROCESSES).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index in 0..num_processes-1 (default $JAX_PROCESS_ID).")
_TIME_LIMIT = flags.DEFINE_string(
    "time_limit", None, "Stop after this long (e.g. 50m, 2h, 90s): the stage in training saves "
    "a checkpoint of its step and the run exits with status 75; the same command resumes. "
    "SIGTERM and Ctrl-C do the same at any time. See fdjax.train.stop.")


def main(argv):
  # fdjax's own INFO lines by default; --verbosity=1 (absl) shows every library's too. Set
  # before the imports below, whose libraries may log at INFO while they load.
  verbosity = start_cli(argv, flags)
  from fdjax import distributed, pipeline, xla_cache  # imported late: --help stays fast
  from fdjax.train import stop
  # Errors a user can fix (bad config value, missing data, locked workdir, a stage made
  # by another config, ...) print as one line and exit 2; --verbosity=1 adds the traceback.
  with cli_errors(verbosity):
    time_limit = _time_limit_s(_TIME_LIMIT.value)
    xla_cache.enable(_XLA_CACHE.value)
    # Before anything touches a device: join the other processes of a multi-host run.
    distributed.initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                           _PROCESS_ID.value)
    if not distributed.is_main_process():
      configure_logging(min(verbosity, -1))  # progress lines from process 0 only
    # '--workdir=~/runs/q' reaches the program unexpanded (the shell expands ~ only at
    # the start of a word): a literal '~' folder in the current directory before
    workdir = os.path.expanduser(_WORKDIR.value)
    distributed.check_shared_directory(workdir)
    try:
      with stop.armed(time_limit):
        pipeline.run(_CONFIG.value, workdir,
                     command=shlex.join(["python", "-m", "fdjax.main", *sys.argv[1:]]))
    except stop.RunStopped as stopped:
      # Every process stops at the same step; process 0 says so.
      if distributed.is_main_process():
        write_stderr(f"{stopped}\nresume: run the same command again\n")   # exit 75 anyway
      raise SystemExit(stop.EXIT_STOPPED) from None


def _time_limit_s(text: str | None) -> float | None:
  """``--time_limit`` in seconds (None: no limit); a bad value is a ``ConfigError``."""
  from fdjax.errors import ConfigError
  from fdjax.train.stop import parse_duration

  if text is None:
    return None
  try:
    return parse_duration(text)
  except ValueError as e:
    raise ConfigError(f"--time_limit: {e}") from None


def run() -> None:
  """``app.run(main)``; an unknown ``--config.<field>`` (which ml_collections rejects
  while parsing flags, naming only the last part of the key) becomes one line naming
  the field and the nearest existing ones, and exit status 2. A Ctrl-C is noted from
  here on (``fdjax.early_stop``) and fdjax's XLA:CPU defaults (``fdjax.cpu_flags``) are
  set, before JAX starts."""
  from fdjax import cpu_flags, early_stop

  from fdjax.errors import parse_flags_or_exit

  early_stop.install()   # a Ctrl-C while JAX loads: noted, the run stops once armed
  cpu_flags.apply_defaults()
  try:
    app.run(main, flags_parser=parse_flags_or_exit)
  except (AttributeError, KeyError, TypeError):   # TypeError: a field under a plain value
    from fdjax.config_fields import unknown_override_message

    message = unknown_override_message(sys.argv)
    if message is None or "--verbosity=1" in sys.argv:
      raise
    sys.stderr.write(f"error: {message}\n")
    sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
  run()
