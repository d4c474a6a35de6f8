"""StudyProgress (the whole study's stage / elapsed / ETA line) with a fake clock, and the
metrics file's vectors."""

import json

import numpy as np
import pytest

from fdjax.train import progress as progress_lib
from fdjax.train.progress import MetricsWriter, StudyProgress


class FakeClock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


PLAN = [("clean", 1000), ("experts/jpeg", 500), ("experts/blur", 500), ("evaluate", 0)]


def test_eta_is_remaining_work_times_seconds_elapsed_per_unit_measured_in_this_process():
  """Time between stages (an evaluation) counts: it recurs with the work (a rate of
  training time alone read the quickstarts' ETA 3-5x too short); the start-up before the
  first stage (10 s here) does not."""
  clock = FakeClock()
  study = StudyProgress(PLAN, clock=clock)
  assert study.describe() == "study: 0/4 stages done, 0s elapsed, ETA ?"
  study.finish("clean")                      # reused from disk: no time, work removed
  assert study.remaining() == 1000
  clock.now = 10.0
  study.start("experts/jpeg")
  assert study.describe() == "study: stage 2/4 experts/jpeg, 10s elapsed, ETA ?"
  clock.now = 30.0
  study.advance("experts/jpeg", 100)         # 100 images in 20 s: 0.2 s per image
  assert study.remaining() == 900
  assert study.describe() == "study: stage 2/4 experts/jpeg, 30s elapsed, ETA 3m00s"
  clock.now = 110.0
  study.advance("experts/jpeg", 500)         # 500 images in 100 s (fit's last advance)
  study.finish("experts/jpeg")
  assert study.eta_seconds() == pytest.approx(500 * 0.2)
  clock.now = 160.0                          # 50 s evaluating the experts
  assert study.eta_seconds() == pytest.approx(500 * 150 / 500)
  assert study.describe() == "study: 2/4 stages done, 2m40s elapsed, ETA 2m30s"


def test_work_done_before_a_resume_counts_as_done_but_not_as_measured():
  clock = FakeClock()
  study = StudyProgress(PLAN, clock=clock)
  study.finish("clean")
  study.start("experts/jpeg")
  clock.now = 100.0
  study.advance("experts/jpeg", 500)         # 500 images in 100 s (fit's last advance)
  study.finish("experts/jpeg")
  study.start("experts/blur")
  study.advance("experts/blur", 300, measured=False)   # restored from a checkpoint
  assert study.remaining() == 200
  clock.now = 120.0
  study.advance("experts/blur", 400)         # 100 more images in 20 s
  # (100 s + 20 s) / (500 + 100) images = 0.2 s per image; 100 images remain.
  assert study.eta_seconds() == pytest.approx(100 * 0.2)
  clock.now = 140.0
  study.finish("experts/blur")
  assert study.remaining() == 0 and study.eta_seconds() == pytest.approx(0.0)
  study.start("evaluate")                    # no training work
  clock.now = 3730.0
  assert study.describe() == "study: stage 4/4 evaluate, 1h02m elapsed, ETA 0s"
  study.finish("evaluate")
  assert study.describe().startswith("study: 4/4 stages done")


def test_a_stage_started_then_found_on_disk_does_not_count_as_measured_work():
  """The runner starts every stage it builds, also one that is then reused from disk:
  its work leaves what remains, but it did none here, so the rate (and the ETA of the
  stages after it) comes from the stages that trained."""
  clock = FakeClock()
  study = StudyProgress(PLAN, clock=clock)
  study.start("clean")
  clock.now = 0.5
  study.finish("clean")                      # reused: 1000 images in 0.5 s were NOT trained
  assert study.remaining() == 1000
  study.start("experts/jpeg")
  clock.now = 20.5
  study.advance("experts/jpeg", 100)         # 100 images in 20 s
  # (0.5 + 20) s / 100 images; 900 images remain (400 of this stage, 500 of the next).
  assert study.eta_seconds() == pytest.approx(900 * 20.5 / 100)
  assert study.describe() == "study: stage 2/4 experts/jpeg, 20s elapsed, ETA 3m04s"


def test_a_resumed_stage_alone_gives_no_eta_until_it_advances():
  clock = FakeClock()
  study = StudyProgress([("only", 100)], clock=clock)
  study.start("only")
  study.advance("only", 60, measured=False)
  clock.now = 5.0
  assert study.eta_seconds() is None and study.describe().endswith("ETA ?")
  study.advance("only", 80)                  # 20 images in 5 s
  assert study.eta_seconds() == pytest.approx(20 * 5.0 / 20)


def test_unknown_and_repeated_stage_names_are_errors():
  with pytest.raises(ValueError, match="repeat"):
    StudyProgress([("a", 1), ("a", 2)])
  study = StudyProgress(PLAN)
  with pytest.raises(ValueError, match="not in the plan"):
    study.start("experts/noise")


def test_metrics_writer_records_vectors_as_lists(tmp_path):
  path = tmp_path / "m" / "metrics.jsonl"
  MetricsWriter(str(path)).write({"stage": "p", "step": 3, "loss": np.float32(0.5),
                                  "losses": np.array([1.0, 2.0], np.float32), "ok": True})
  assert json.loads(path.read_text()) == {"stage": "p", "step": 3, "loss": 0.5,
                                          "losses": [1.0, 2.0], "ok": True}


def test_a_stage_s_line_measures_images_per_second_and_eta_over_its_last_interval(
    monkeypatch):
  # 40 steps of 8 images in 10 s: 32 images/s; 160 steps left at 0.25 s each: ETA 40 s.
  clock = [100.0]
  monkeypatch.setattr(progress_lib.time, "perf_counter", lambda: clock[0])
  line = progress_lib.Progress("s", total_steps=200, batch_size=8, start_step=0)
  clock[0] += 10.0
  out = line.line(40, {"loss": 1.0}, 0.1)
  assert out == {"images_per_s": pytest.approx(32.0), "eta_s": pytest.approx(40.0)}
  clock[0] += 5.0       # the next interval alone: 10 steps in 5 s
  out = line.line(50, {"loss": 1.0}, 0.1)
  assert out == {"images_per_s": pytest.approx(16.0), "eta_s": pytest.approx(75.0)}


def test_an_evaluation_logs_each_part_after_every_interval_with_eta_and_its_end(monkeypatch):
  """Parts of work 20 (clean), 20, 20 and 60 images x levels; a line at most every 10 s:
  after 'rain' (60 of 120 done in 12 s: 60 left at 0.2 s each, ETA 12 s) and the end."""
  lines = []
  monkeypatch.setattr(progress_lib.logging, "info", lambda fmt, *a: lines.append(fmt % a))
  clock = FakeClock()
  ev = progress_lib.EvalProgress("fusiondistill", every=10.0, clock=clock)
  ev.plan([("clean", 20), ("denoise", 20), ("rain", 20), ("haze", 60)])
  clock.now = 4.0
  ev.done("clean")
  clock.now = 8.0
  ev.done("denoise")     # 8 s since the start: silent
  assert lines == []
  clock.now = 12.0
  ev.done("rain")
  assert lines == ["[eval fusiondistill] rain done (3/4), 12s elapsed, ETA 12s"]
  clock.now = 20.0
  ev.done("haze")        # 8 s since the last line, but the end of a 20 s evaluation
  assert lines[1:] == ["[eval fusiondistill] done in 20s"]
  with pytest.raises(ValueError, match="'blur' is not in the plan"):
    ev.done("blur")


def test_a_short_evaluation_prints_nothing(monkeypatch):
  lines = []
  monkeypatch.setattr(progress_lib.logging, "info", lambda fmt, *a: lines.append(fmt % a))
  clock = FakeClock()
  ev = progress_lib.EvalProgress("input", every=10.0, clock=clock)
  ev.plan([("clean", 5), ("denoise", 5)])
  clock.now = 3.0
  ev.done("clean")
  clock.now = 9.9
  ev.done("denoise")
  assert lines == []
