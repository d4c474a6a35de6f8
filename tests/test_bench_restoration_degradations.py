"""``python -m fdjax.bench restoration_degradations``: degradation and convolution speed."""

import math

import pytest

from fdjax.bench import restoration_degradations as bench

pytest.importorskip("scipy")

TINY = ["--batch", "2", "--size", "24", "--patch", "16", "--repeats", "1", "--seconds", "0.01"]


def _number(cell: str) -> float:
  return float(cell.replace(",", "").removesuffix("x"))


def test_tiny_run_prints_a_row_per_name_and_per_convolution_shape(capsys):
  results = bench.main([*TINY, "--names", "rain,haze"])
  out = capsys.readouterr().out
  assert "jax " in out and "load average at start" in out and "load average at end" in out
  lines = out.splitlines()
  header = next(line for line in lines if line.startswith("| measured"))
  assert "fdjax ms/batch" in header and "peer/fdjax" in header and "max abs diff" in header
  rows = [[c.strip() for c in line.strip().strip("|").split("|")]
          for line in lines if line.startswith("| ") and line != header]
  for name in ("rain", "haze"):
    (row,) = [r for r in rows if r[0] == name]
    assert row[1] == "[2, 24, 24, 3]"
    for cell in row[2:4]:
      assert math.isfinite(_number(cell)) and _number(cell) > 0
  for conv, shape in (("conv rain", "[2, 24, 24, 1] K=11 zero"),
                      ("conv motion_blur", "[2, 24, 24, 3] K=17 edge")):
    conv_rows = [r for r in rows if r[0] == conv]
    assert sorted(r[4] for r in conv_rows) == ["lax", "scipy"]
    for row in conv_rows:
      assert row[1] == shape
      for cell in (row[2], row[3], row[5], row[6]):
        assert math.isfinite(_number(cell)) and _number(cell) > 0
      assert row[6].endswith("x")
      assert 0 <= _number(row[7]) < bench.TOLERANCE
    assert results[conv]["lax_ratio"] == pytest.approx(
        results[conv]["lax_ms"] / results[conv]["ms"])
  for name in ("rain", "haze"):
    (row,) = [r for r in rows if r[0] == f"views {name}"]
    assert row[1] == "[2, 24, 24, 3] -> 16 tile cue" and row[4] == "patch cue"
    for cell in (row[2], row[3], row[5], row[6]):
      assert math.isfinite(_number(cell)) and _number(cell) > 0
  assert set(results) == {"rain", "haze", "conv rain", "conv motion_blur",
                          "views rain", "views haze"}


def test_unknown_name_is_a_clear_error(capsys):
  with pytest.raises(SystemExit) as exit_:
    bench.main([*TINY, "--names", "rain,no_such_degradation"])
  assert exit_.value.code == 2
  assert "--names has unknown ['no_such_degradation']; choose from" in capsys.readouterr().err


def test_subcommand_is_registered():
  from fdjax.bench.__main__ import SUBCOMMANDS  # pylint: disable=import-outside-toplevel
  assert "restoration_degradations" in SUBCOMMANDS
