"""Input: the degraded input itself scored as if it were the restored image (no model).

The reference line of the restoration tables (e.g. the rainy Rain100L inputs' PSNR, by
which a deraining gain is judged). Needs a task whose outputs are images
(``task.identity``: restoration); nothing trains.
"""

from __future__ import annotations

import functools

from fdjax.methods.base import Method, Output


@functools.lru_cache(maxsize=8)
def identity_predictor(task):
  """``predict(variables, images_uint8) -> task.identity(images)`` (variables unused)."""

  def predict(variables, images):
    del variables
    return task.identity(images)

  return predict


def _rows(runner) -> Output:
  """One row; its clean column is empty (a clean input scored against itself)."""
  ctx = runner.ctx
  results = dict(runner.evaluate("input", {}, predict=identity_predictor(ctx.task)))
  results["clean"] = None
  if "metrics" in results:
    results["metrics"] = {m: {**v, "clean": None} for m, v in results["metrics"].items()}
  return Output([("Input", results)])


METHOD = Method("input", requires=lambda ctx: (), rows=_rows,
                members=lambda ctx: (0, 0))
