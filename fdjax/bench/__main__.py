"""Dispatcher: ``python -m fdjax.bench <subcommand> [flags]``.

Each subcommand is a module with ``main(argv)``; ``argv`` excludes the
subcommand name. Every subcommand but ``train_step`` is imported when it is
chosen, so one subcommand's imports do not slow down (or break) another's.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

from fdjax.bench import train_step


def _lazy(module: str) -> Callable[[list[str]], object]:
  def main(argv: list[str]):
    try:
      mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
      if e.name != module:
        raise
      sys.exit(f"subcommand module {module} does not exist (yet); it must define main(argv)")
    return mod.main(argv)
  return main


# What each subcommand measures (its module's docstring says more, as does its --help).
DESCRIPTIONS = {
    "train_step": "training images/s of the fdjax engine (CIFAR ResNets) vs PyTorch",
    "conv_grad": "the weight gradient of one 3x3 convolution, computed three ways",
    "degradations": "the classification degradations vs the paper's per-image CPU pipeline",
    "moe": "inference cost of the MoE student against the dense student",
    "population": "P members in one jitted EA-Adam step vs P sequential single-model steps",
    "restoration": "restoration models' training patches/s and inference megapixels/s "
                   "(--torch: vs PyTorch twins)",
    "restoration_degradations": "the restoration degradations and their per-image convolution",
}

SUBCOMMANDS: dict[str, Callable[[list[str]], object]] = {
    "train_step": train_step.main,
    "conv_grad": _lazy("fdjax.bench.conv_grad"),
    "degradations": _lazy("fdjax.bench.degradations"),
    "moe": _lazy("fdjax.bench.moe"),
    "population": _lazy("fdjax.bench.population"),
    "restoration": _lazy("fdjax.bench.restoration"),
    "restoration_degradations": _lazy("fdjax.bench.restoration_degradations"),
}


def usage() -> str:
  """The usage line and one line per subcommand."""
  width = max(map(len, SUBCOMMANDS))
  return "\n".join([f"usage: python -m fdjax.bench {{{','.join(SUBCOMMANDS)}}} [flags]", "",
                    *(f"  {name.ljust(width)}  {DESCRIPTIONS[name]}" for name in SUBCOMMANDS),
                    "", "python -m fdjax.bench <subcommand> --help: its flags and their defaults"])


def main(argv: list[str] | None = None) -> None:
  """Runs the subcommand ``argv[0]`` with the rest of ``argv``. A user error (a bad value
  found after the flags were parsed, a run folder that is not a finished run) is one
  ``error:`` line and exit status 2, as for ``fdjax.main``."""
  from fdjax.errors import cli_errors

  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
    if argv and argv[0] not in ("-h", "--help"):
      sys.exit(f"unknown subcommand {argv[0]!r}\n{usage()}")
    print(usage())
    return
  with cli_errors():
    SUBCOMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
  from fdjax import cpu_flags

  cpu_flags.apply_defaults()   # fdjax.main's XLA:CPU defaults, before JAX starts
  main()
