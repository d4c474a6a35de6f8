"""Command-line entry point.

    python -m fdjax.main --config=configs/quickstart.py --workdir=runs/quickstart

Any config field can be overridden, e.g. ``--config.clean.epochs=3``; an unknown
field is an error. Re-running with the same workdir resumes: finished stages are
reused and an interrupted one continues from its last checkpoint.

The console shows fdjax's own lines (and every library's warnings); add
``--verbosity=1`` to see the libraries' INFO/DEBUG lines too (orbax, jax).
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

from fdjax.console import configure_logging

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file in configs/ (a get_config() module).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from fdjax import pipeline  # imported late so that --help stays fast

  # fdjax's own INFO lines by default; --verbosity=1 (absl) shows every library's too.
  configure_logging(flags.FLAGS.verbosity if flags.FLAGS["verbosity"].present else 0)
  pipeline.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
