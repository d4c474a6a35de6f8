"""Small predicates the config checks share (``fdjax.validate``, ``validate_optimizer``,
``validate_population``); none imports JAX."""

from __future__ import annotations

import math
import numbers

MISSING = object()   # what ``get`` returns for a field the config does not have


def get(config, dotted: str):
  """The value at ``dotted`` ('block.field') in ``config``, or ``MISSING``."""
  node = config
  for part in dotted.split("."):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      return MISSING
  return node


def is_int(x) -> bool:
  """An integer that is not a bool."""
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_real(x) -> bool:
  """A real number that is not a bool (inf and NaN included)."""
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def is_finite_real(x) -> bool:
  """A finite real number that is not a bool."""
  return is_real(x) and math.isfinite(x)


def distinct(items) -> bool:
  """No item repeated."""
  return len(set(items)) == len(items)
