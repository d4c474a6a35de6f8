"""Command-line entry point.

    python -m fdjax.main --config=configs/quickstart.py --workdir=runs/quickstart

Any config field can be overridden, e.g. ``--config.clean.epochs=3``; an unknown
field is an error. Re-running with the same workdir resumes: finished stages are
reused and an interrupted one continues from its last checkpoint. Compiled steps are
kept in JAX's persistent cache (``--xla_cache``, see ``fdjax.xla_cache``).

The console shows fdjax's own lines (and every library's warnings); add
``--verbosity=1`` to see the libraries' INFO/DEBUG lines too (orbax, jax).
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from fdjax.console import configure_logging
from fdjax.errors import EXIT_USER_ERROR, cli_errors

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file in configs/ (a get_config() module).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
_XLA_CACHE = flags.DEFINE_string(
    "xla_cache", "auto", "JAX's persistent compilation cache: 'auto' (<fdjax cache>/xla), "
    "a folder, or 'none'. Reruns and resumed runs skip most compilation.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from fdjax import pipeline, xla_cache  # imported late so that --help stays fast

  # fdjax's own INFO lines by default; --verbosity=1 (absl) shows every library's too.
  verbosity = flags.FLAGS.verbosity if flags.FLAGS["verbosity"].present else 0
  configure_logging(verbosity)
  # Errors a user can fix (bad config value, missing data, locked workdir, a stage made
  # by another config, ...) print as one line and exit 2; --verbosity=1 adds the traceback.
  with cli_errors(verbosity):
    xla_cache.enable(_XLA_CACHE.value)
    pipeline.run(_CONFIG.value, _WORKDIR.value)


def run() -> None:
  """``app.run(main)``; an unknown ``--config.<field>`` (which ml_collections rejects
  while parsing flags, naming only the last part of the key) becomes one line naming
  the field and the nearest existing ones, and exit status 2."""
  try:
    app.run(main)
  except (AttributeError, KeyError):
    from fdjax.config_fields import unknown_override_message

    message = unknown_override_message(sys.argv)
    if message is None or "--verbosity=1" in sys.argv:
      raise
    sys.stderr.write(f"error: {message}\n")
    sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
  run()
