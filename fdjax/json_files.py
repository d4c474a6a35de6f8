"""JSON records that a later run reads back (evaluation caches, the best epoch, stage
fingerprints, population reports), written so that a reader never sees half a file.

``write_json(path, record)`` writes ``<path>.<pid>.tmp`` and renames it over ``path``
(``os.replace``, atomic on POSIX; the process id keeps two writers' temporary files
apart): a run killed or stopped (``fdjax.train.stop``) in the
middle of the write leaves the previous file or none, never a truncated one that the
next run would fail to parse.
"""

from __future__ import annotations

import json
import os
from typing import Any


def write_json(path: str, record: Any, **dump_options) -> None:
  """``json.dump(record, f, **dump_options)`` to ``path``, atomically (module docstring);
  creates ``path``'s folder if needed."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    json.dump(record, f, **dump_options)
  os.replace(tmp, path)
