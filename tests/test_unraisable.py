"""``fdjax.unraisable``: a filter per kind in front of ``sys.unraisablehook``, once in
the chain however often its installer runs (the checkpoint code installs the orbax one
before every save and restore, the stop handlers theirs at every arming)."""

import sys
import types

from fdjax import unraisable
from fdjax.train import stop
from fdjax.train.abandoned_reads import ignore_abandoned_reads


def _args(exc):
  return types.SimpleNamespace(exc_value=exc, exc_type=type(exc), exc_traceback=None,
                               err_msg=None, object=None)


def _chain():
  hook, names = sys.unraisablehook, []
  while hook is not None:
    names.append(getattr(hook, "_fdjax_unraisable_filter", None))
    hook = getattr(hook, "_fdjax_previous", None)
  return names


def test_installers_called_in_turn_keep_one_filter_each_and_pass_the_rest_on(monkeypatch):
  passed = []
  monkeypatch.setattr(sys, "unraisablehook", passed.append)
  for _ in range(5):   # a save, an arming, a restore, ... in turn
    ignore_abandoned_reads()
    stop._quiet_lost_stops()
  assert _chain() == ["lost_stop", "abandoned_reads", None]
  dropped = []
  unraisable.drop("value_errors", lambda a: isinstance(a.exc_value, ValueError),
                  dropped.append)
  sys.unraisablehook(_args(stop.RunStopped("Ctrl-C")))   # dropped by the stop's filter
  sys.unraisablehook(_args(ValueError("known")))
  other = _args(KeyError("other"))
  sys.unraisablehook(other)
  assert [a.exc_value.args for a in dropped] == [("known",)] and passed == [other]
