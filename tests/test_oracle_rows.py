"""The Oracle row (``fdjax.methods.oracle``) on a stub runner whose evaluations are
distinct markers: degradation d's column is expert d's result on d, the heatmap's row
i column j is expert i on degradation j, and the example grids show expert d on d."""

import types

import numpy as np

from fdjax.methods import oracle

NAMES = ("jpeg", "blur", "awgn")


def _result(expert: str, clean_value: float) -> dict:
  # expert e on degradation d: 'all' = 10 * (index of e) + (index of d), unique per pair
  e = NAMES.index(expert) if expert in NAMES else 9
  out = {d: {"all": 10.0 * e + j, "who": (expert, d)} for j, d in enumerate(NAMES)}
  out["clean"] = {"all": clean_value}
  out["per_image"] = {d: [f"{expert}@{d}"] for d in NAMES}
  out["metrics"] = {"ssim": {**{d: {"all": -(10.0 * e + j)} for j, d in enumerate(NAMES)},
                             "clean": {"all": -clean_value}}}
  return out


class StubRunner:
  def __init__(self):
    self.ctx = types.SimpleNamespace(degradations=NAMES)
    self.variables = {f"experts/{d}": {"expert": d} for d in NAMES}
    self.variables["clean"] = {"expert": "clean"}

  def get(self, name):
    return self.variables[name]

  def evaluate(self, name, variables):
    owner = name[len("expert_"):] if name.startswith("expert_") else name
    assert variables == self.variables["clean" if owner == "clean" else f"experts/{owner}"]
    return _result(owner, 0.5)


def test_each_degradation_gets_its_own_expert_s_result_and_heatmap_row():
  out = oracle._rows(StubRunner())
  (label, results), = out.rows
  assert label == "Oracle"
  for j, d in enumerate(NAMES):
    assert results[d]["who"] == (d, d)
    assert results["per_image"][d] == [f"{d}@{d}"]
    assert results["metrics"]["ssim"][d]["all"] == -(10.0 * j + j)
  assert results["clean"] == {"all": 0.5}
  assert results["avg"] == np.mean([11.0 * j for j in range(3)])
  heatmap = np.asarray(out.artifacts["heatmap"])
  np.testing.assert_array_equal(heatmap, [[10.0 * i + j for j in range(3)] for i in range(3)])
  for d in NAMES:
    assert out.models["Oracle"](d) == (None, {"expert": d})
