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


def test_eta_is_training_rate_times_images_left_plus_each_cycles_time_outside_training():
  """A stage's compilation and the evaluations after it do not scale with its images (the
  restoration quickstart's base: 44% of the images, 20% of the time): they are counted
  per cycle (a training stage and what follows it), the training per image, leaving out
  each stage's first report (its compilation)."""
  clock = FakeClock()
  study = StudyProgress(PLAN, clock=clock)
  assert study.describe() == "study: 0/4 stages done, 0s elapsed, ETA ?"
  study.start("clean")
  clock.now = 10.0
  study.advance("clean", 100)                # the first report: the compilation, no rate
  assert study.eta_seconds() is None
  clock.now = 20.0
  study.advance("clean", 600)                # 500 images in 10 s: 0.02 s per image
  # 1400 images x 0.02 s, and the 10 s outside training so far for each of the two
  # cycles to come (the experts); the current cycle has spent all it is known to take.
  assert study.eta_seconds() == pytest.approx(28 + 2 * 10)
  clock.now = 28.0
  study.advance("clean", 1000)               # 400 images in 8 s
  study.finish("clean")
  clock.now = 40.0                           # 12 s evaluating the base
  assert study.eta_seconds() == pytest.approx(1000 * 0.02 + 2 * 22)
  assert study.describe() == "study: 1/4 stages done, 40s elapsed, ETA 1m04s"
  study.start("experts/jpeg")
  clock.now = 45.0
  study.advance("experts/jpeg", 50)          # a new cycle; its compilation
  clock.now = 54.0
  study.advance("experts/jpeg", 500)         # 450 images in 9 s
  study.finish("experts/jpeg")
  # blur's 500 images, blur's cycle (22 s outside training, as the base's), and what
  # this cycle has not spent of its 22 s yet (5 s so far: its start and compilation).
  assert study.eta_seconds() == pytest.approx(500 * 0.02 + 22 + 17)
  clock.now = 60.0
  assert study.eta_seconds() == pytest.approx(500 * 0.02 + 22 + 11)


def test_the_training_stage_s_own_images_go_at_its_own_rate():
  # A population stage trains P members and their critics per image: at the base's
  # rate its 9 minutes left read as under 2.
  clock = FakeClock()
  study = StudyProgress([("clean", 1000), ("ea_adam", 1000), ("fusion", 1000)], clock=clock)
  study.start("clean")
  for t, done in ((10.0, 100), (20.0, 1000)):  # 900 images in 10 s
    clock.now = t
    study.advance("clean", done)
  study.finish("clean")
  study.start("ea_adam")
  for t, done in ((30.0, 100), (130.0, 200)):  # 100 images in 100 s: 1 s per image
    clock.now = t
    study.advance("ea_adam", done)
  # ea_adam's 800 at its own 1 s; fusion's 1000 at the rate over all (110 s / 1000);
  # fusion's cycle 10 s outside training as the base's, and this one's 10 s spent.
  assert study.eta_seconds() == pytest.approx(800 * 1.0 + 1000 * 0.11 + 10 + 0)
  study.finish("ea_adam")
  assert study.eta_seconds() == pytest.approx(1000 * 0.11 + 10 + 0)


def test_after_the_last_stage_the_eta_counts_the_evaluations_to_come():
  clock = FakeClock()
  study = StudyProgress([("clean", 100), ("experts", 100)], clock=clock)
  for name, begin in (("clean", 0.0), ("experts", 40.0)):
    clock.now = begin
    study.start(name)
    clock.now = begin + 10.0
    study.advance(name, 50)                  # compiled
    clock.now = begin + 20.0
    study.advance(name, 100)                 # 50 images in 10 s
    study.finish(name)
  clock.now = 70.0                           # 10 s after the last stage's training
  # The base's cycle spent 30 s outside training (10 s compiling, 20 s evaluating); this
  # one 20 s so far: 10 s to come (a single rate over all the time read 0 s here).
  assert study.remaining() == 0 and study.eta_seconds() == pytest.approx(10.0)
  clock.now = 90.0
  assert study.eta_seconds() == pytest.approx(0.0)


def test_work_done_before_a_resume_counts_as_done_but_not_as_measured():
  clock = FakeClock()
  study = StudyProgress(PLAN, clock=clock)
  study.finish("clean")                      # reused from disk
  study.start("experts/blur")
  study.advance("experts/blur", 300, measured=False)   # restored from a checkpoint
  assert study.remaining() == 700 and study.eta_seconds() is None
  clock.now = 10.0
  study.advance("experts/blur", 350)         # compiled
  assert study.eta_seconds() is None
  clock.now = 15.0
  study.advance("experts/blur", 400)         # 50 more images in 5 s: 0.1 s per image
  # 600 images (100 of blur's, 500 of jpeg's) and jpeg's cycle (10 s so far outside).
  assert study.eta_seconds() == pytest.approx(600 * 0.1 + 10)


def test_a_stage_started_then_found_on_disk_does_not_count_as_measured_work():
  """The runner starts every stage it builds, also one that is then reused from disk:
  its work leaves what remains, but it did none here, and it begins no cycle."""
  clock = FakeClock()
  study = StudyProgress(PLAN, clock=clock)
  study.start("clean")
  clock.now = 0.5
  study.finish("clean")                      # reused: 1000 images in 0.5 s were NOT trained
  assert study.remaining() == 1000
  study.start("experts/jpeg")
  clock.now = 5.0
  study.advance("experts/jpeg", 100)
  clock.now = 7.0
  study.advance("experts/jpeg", 200)         # 100 images in 2 s
  # 800 images x 0.02 s, and blur's cycle: jpeg's 4.5 s outside training so far.
  assert study.eta_seconds() == pytest.approx(800 * 0.02 + 4.5)
  assert study.describe() == "study: stage 2/4 experts/jpeg, 7s elapsed, ETA 20s"


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
