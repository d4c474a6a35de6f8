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


SUBCOMMANDS: dict[str, Callable[[list[str]], object]] = {
    "train_step": train_step.main,
    "conv_grad": _lazy("fdjax.bench.conv_grad"),
    "degradations": _lazy("fdjax.bench.degradations"),
    "moe": _lazy("fdjax.bench.moe"),
    "population": _lazy("fdjax.bench.population"),
    "restoration": _lazy("fdjax.bench.restoration"),
    "restoration_degradations": _lazy("fdjax.bench.restoration_degradations"),
}


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
    msg = f"usage: python -m fdjax.bench {{{','.join(SUBCOMMANDS)}}} [flags]"
    if argv and argv[0] not in ("-h", "--help"):
      sys.exit(f"unknown subcommand {argv[0]!r}\n{msg}")
    print(msg)
    return
  SUBCOMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
  from fdjax import cpu_flags

  cpu_flags.apply_defaults()   # fdjax.main's XLA:CPU defaults, before JAX starts
  main()
