"""The console's list of a run's files (``fdjax.pipeline._file_summary``): the tables and
figures a method wrote (the MoE student's ``router_usage.md`` and its PNGs) are listed,
and files an earlier run left in the workdir are not."""

import os
import time

from fdjax import pipeline


def test_files_written_by_this_run_are_listed_and_older_ones_are_not(tmp_path):
  for name in (*pipeline.RESULT_FILES, "accuracy_jpeg.png", "router_usage.md",
               "router_usage_k1.png", "old_plot.png", "old_notes.md"):
    (tmp_path / name).write_text("x")
  long_ago = time.time() - 3600
  for name in ("old_plot.png", "old_notes.md"):
    os.utime(tmp_path / name, (long_ago, long_ago))
  summary = pipeline._file_summary(str(tmp_path), [str(tmp_path / "accuracy_jpeg.png")], [0],
                                   since=time.time() - 60).splitlines()
  assert summary[1] == ("  tables:  results.md, results.csv, per_level.csv, results.json, "
                        "router_usage.md")
  assert summary[2] == "  figures: accuracy_jpeg.png, router_usage_k1.png"


def test_the_reports_a_method_writes_in_a_seed_folder_are_listed_when_present(tmp_path):
  """EA-Adam's Pareto reports (``Method.reports``) in the first seed's folder; a report
  the run did not write (the fusion network's, not run) is left out."""
  from fdjax.methods import METHODS
  reports = {p: w for name in ("ea_adam", "ea_adam_fusion")
             for p, w in METHODS[name].reports.items()}
  for path in ("ea_adam/pareto.json", "ea_adam/merged/merged.json", "ea_adam/merged/pareto.png"):
    (tmp_path / "seed_0" / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "seed_0" / path).write_text("x")
  for seeds, prefix in (([0], "seed_0"), ([0, 1], "seed_<s>")):
    lines = pipeline._file_summary(str(tmp_path), [], seeds, reports=reports).splitlines()
    listed = [line for line in lines if f"{prefix}/ea_adam" in line]
    assert listed[0].split()[0] == "reports:"
    assert [line.split("  (")[0].split()[-1] for line in listed] == [
        f"{prefix}/ea_adam/pareto.json", f"{prefix}/ea_adam/merged/merged.json",
        f"{prefix}/ea_adam/merged/pareto.png"]
    assert all(line.index(prefix) == lines[1].index("results.md") for line in listed)
    assert not any("alpha.json" in line for line in lines)


def test_the_example_images_say_which_seed_s_models_they_show(tmp_path):
  """The grids are written once, from the first seed's models (fdjax.pipeline)."""
  images = [str(tmp_path / "examples_rain.png")]
  one = pipeline._file_summary(str(tmp_path), [], [3], images).splitlines()
  two = pipeline._file_summary(str(tmp_path), [], [3, 4], images).splitlines()
  line = lambda lines: next(x for x in lines if x.startswith("  images:  examples_rain.png"))
  assert line(one).endswith("(example test images: input | each single-model row | target)")
  assert line(two).endswith("input | each single-model row of seed 3 | target)")


def test_a_run_computed_in_bfloat16_says_so_under_its_tables():
  import flax.linen as nn
  import jax.numpy as jnp
  from fdjax.models import UNet
  from fdjax.pipeline import _dtype_note

  assert _dtype_note(UNet(dtype=jnp.bfloat16)) == (
      " Computed in bfloat16 (parameters, optimiser state, losses and metrics in float32).")
  assert _dtype_note(UNet()) == "" and _dtype_note(nn.Dense(3)) == ""
