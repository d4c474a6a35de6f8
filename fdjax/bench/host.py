"""The machine a benchmark runs on, as every benchmark's header states it, and pinning.

``describe()`` is ``'CPU AMD EPYC 7B13, 2 CPU(s), load average 0.4'``: the CPU model
(figures are quoted with it), the CPUs this process may use and the 1-minute load
average at the start. ``pin(n)`` restricts the process to its first ``n`` CPUs (before
JAX first runs, so that XLA's thread pool is sized to them too). ``load_note(load)`` is
the line a benchmark prints after its figures when other processes shared the cores:
a multi-threaded peer (PyTorch's intra-op pool) loses most under such contention, so
its ratio is the least reliable figure then.
"""

from __future__ import annotations

import argparse
import os
import platform


def cpu_model() -> str:
  """The CPU's model name from ``/proc/cpuinfo`` (else ``platform.processor()``)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def cpus() -> int:
  """The CPUs this process may use (its affinity), else the machine's count."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_average() -> float:
  """The 1-minute load average, NaN where the system has none."""
  try:
    return os.getloadavg()[0]
  except (AttributeError, OSError):
    return float("nan")


def load_averages() -> str:
  """The 1-, 5- and 15-minute load averages, ``'0.42 0.61 0.70'`` (``'n/a'`` where the
  system has none): what a benchmark prints beside each figure."""
  try:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
  except (AttributeError, OSError):
    return "n/a"


def pin(count: int) -> None:
  """Restricts this process to its first ``count`` CPUs (0: leaves it alone)."""
  if count and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:count])


def describe(load: float | None = None) -> str:
  """``'CPU <model>, <n> CPU(s), load average <load>'`` (``load``: now, by default)."""
  load = load_average() if load is None else load
  return f"CPU {cpu_model()}, {cpus()} CPU(s), load average {load:.1f}"


def load_note(load: float, pinnable: bool = True) -> str | None:
  """The warning line when the load average ``load`` (taken at the start; the whole
  machine's) exceeds half its CPUs, else None; it suggests ``--cpus 1`` only where more
  than one CPU is used and the benchmark has that flag (``pinnable``)."""
  n, machine = cpus(), os.cpu_count() or 1
  if not load > 0.5 * machine:
    return None
  return (f"warning: load average {load:.1f} on the machine's {machine} CPU(s) at the start: "
          "other processes shared the cores, so these figures (a multi-threaded peer's most) "
          "are indicative only; rerun on an idle machine"
          + (" or with --cpus 1" if n > 1 and pinnable else ""))


def parser(subcommand: str, doc: str | None) -> argparse.ArgumentParser:
  """The argument parser of ``python -m fdjax.bench <subcommand>``: its module
  docstring's first paragraph as the description, every flag's default in ``--help``."""
  from fdjax.console import first_paragraph
  return argparse.ArgumentParser(prog=f"python -m fdjax.bench {subcommand}",
                                 description=first_paragraph(doc or ""),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)


def names_in(parser, flag: str, text: str, valid) -> list[str]:
  """The comma-separated names of ``text``, each one of ``valid``; ``parser.error`` (one
  line naming the bad ones and the valid ones, exit 2) otherwise or when none is given."""
  names = [n.strip() for n in text.split(",") if n.strip()]
  unknown = [n for n in names if n not in valid]
  if unknown or not names:
    parser.error(f"{flag} {'names none' if not names else f'has unknown {unknown}'}; choose "
                 f"from {','.join(valid)}")
  return names


def resnet_depths(parser, flag: str, text: str) -> list[int]:
  """The comma-separated CIFAR ResNet depths of ``text`` (each 6n+2, n >= 1);
  ``parser.error`` otherwise."""
  try:
    depths = [int(d) for d in str(text).split(",") if d.strip()]
  except ValueError:
    depths = []
  if not depths or any((d - 2) % 6 or d < 8 for d in depths):
    parser.error(f"{flag} must be CIFAR ResNet depths 6n+2 (8, 20, 32, 56, 110, ...), "
                 f"got {text!r}")
  return depths


def resnet_depth(parser, flag: str, text: str) -> int:
  """One CIFAR ResNet depth (6n+2) from ``text``; ``parser.error`` otherwise (a list too)."""
  depths = resnet_depths(parser, flag, text)
  if len(depths) != 1:
    parser.error(f"{flag} takes one depth, got {text!r}")
  return depths[0]


def at_least_one(parser, args, *names: str) -> None:
  """``parser.error`` unless every option ``names`` (attribute names) of ``args`` is >= 1:
  a benchmark of no repeats or calls has no median to print."""
  for name in names:
    if getattr(args, name) < 1:
      parser.error(f"--{name.replace('_', '-')} must be at least 1")


def loop_note(loop: str) -> str:
  """`` (unroll here)`` for ``'auto'``: the loop it picks on this backend
  (``fdjax.moe.experts.resolve_expert_loop``, the rule of the population's members too);
  '' for an explicit one."""
  from fdjax.moe.experts import resolve_expert_loop   # late: it imports JAX
  return f" ({resolve_expert_loop(loop)} here)" if loop == "auto" else ""
