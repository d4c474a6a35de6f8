"""Known unraisable exceptions kept off the console: one filter in front of
``sys.unraisablehook`` per kind.

Python prints an exception it cannot raise (one raised in a garbage-collection
callback, or in a callback of a closed event loop) through ``sys.unraisablehook``, with
a traceback. ``drop(name, drops, on_drop)`` puts a hook in front of the current one that
hands each such exception for which ``drops(unraisable)`` is true to ``on_drop`` instead,
and every other one to the hook that was there. Installed once per ``name`` in the
whole chain (a hook installed after it, e.g. by a test runner, is wrapped in turn, and
installing again adds nothing however often it is called). Imports only the standard
library.
"""

from __future__ import annotations

import sys
from typing import Callable

_NAME = "_fdjax_unraisable_filter"   # the attribute naming a hook installed here
_PREVIOUS = "_fdjax_previous"        # ... and the hook it hands the others to


def installed(name: str) -> bool:
  """Whether ``name``'s filter is anywhere in the chain of ``sys.unraisablehook``."""
  hook = sys.unraisablehook
  while hook is not None:
    if getattr(hook, _NAME, None) == name:
      return True
    hook = getattr(hook, _PREVIOUS, None)
  return False


def drop(name: str, drops: Callable[[object], bool], on_drop: Callable[[object], None]) -> None:
  """Puts ``name``'s filter in front of ``sys.unraisablehook`` unless the chain holds it."""
  if installed(name):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    if drops(unraisable):
      on_drop(unraisable)
      return
    previous(unraisable)

  setattr(hook, _NAME, name)
  setattr(hook, _PREVIOUS, previous)
  sys.unraisablehook = hook
