"""Ctrl-C before ``fdjax.train.stop`` is armed: noted, and the run stops once it has loaded.

A command spends its first seconds importing JAX and the libraries and joining the other
processes; ``fdjax.train.stop``'s handlers are armed after that. Python's own SIGINT
handler raised ``KeyboardInterrupt`` wherever the program was: in JAX's garbage-collection
callback, which ignores exceptions (the run went on to its end), or in an import (a
traceback). ``install()`` (``fdjax.main``, first thing) notes the first Ctrl-C instead;
``fdjax.train.stop.STOP.arm`` then stops the run as any Ctrl-C outside training does. A
second Ctrl-C at least ``SAME_SIGNAL_S`` later raises ``KeyboardInterrupt`` at once (one
press can arrive twice: the terminal's, and a ``timeout --foreground`` forwarding it).
Imports nothing heavy: it is installed before JAX loads.
"""

from __future__ import annotations

import signal
import time

from fdjax.console import write_stderr

SAME_SIGNAL_S = 1.0   # a second signal this soon after the first is the same request

_noted: list[float] = []   # monotonic time of the first Ctrl-C


def install() -> None:
  """Notes Ctrl-C (where SIGINT is not ignored: ``launch/local.sh``'s other processes)."""
  if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _on_ctrl_c)


def uninstall() -> None:
  """Python's own SIGINT handler back, where ``install`` put this module's (the stop
  handlers, once armed, save and later restore the handler they replace: this one would
  swallow the second Ctrl-C that should stop at once)."""
  if signal.getsignal(signal.SIGINT) is _on_ctrl_c:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def take() -> bool:
  """Whether a Ctrl-C came before arming; the request is handed over (cleared)."""
  came = bool(_noted)
  _noted.clear()
  return came


def _on_ctrl_c(signum, frame) -> None:
  now = time.monotonic()
  if _noted:
    if now - _noted[0] < SAME_SIGNAL_S:
      return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise KeyboardInterrupt
  _noted.append(now)
  write_stderr("Ctrl-C: the run stops as soon as it has loaded (again to stop at once)\n")
