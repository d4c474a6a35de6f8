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
