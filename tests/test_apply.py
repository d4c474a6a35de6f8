"""Restoring and classifying a user's images with a finished run: ``load_predictor`` and
``python -m fdjax.apply`` on tiny run folders built by hand in the layout a run writes
(``config.json``/``run.json`` by the pipeline's own writers, stage variables by
``save_variables``), checked against the model applied directly with numpy rounding."""

import csv
import functools
import json
import os
import shutil
import types

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

import fdjax
from fdjax import apply as apply_cli
from fdjax import image_files
from fdjax import load as load_lib
from fdjax import methods as methods_lib
from fdjax import pipeline, tasks
from fdjax.config import base_config
from fdjax.config_fields import write_config_json
from fdjax.errors import UserError
from fdjax.eval import inference
from fdjax.load import ModelNotInRunError, RunError, StageNotFinishedError, UnknownModelError
from fdjax.predictor import Tiling, load_predictor
from fdjax.train.variables_io import save_variables
from absl_cli import run_main
from random_weights import random_variables

TINY_UNET = dict(model="unet", width=4, depth=1, blocks=1, middle_blocks=1)


def make_run(workdir, config, image_shape, stages, *, num_classes=0, class_names=()):
  """A finished run folder: the pipeline's ``config.json`` and ``run.json``, and random
  variables of the task's model in ``seed_0/<stage>/variables`` for each of ``stages``.
  Returns the model and ``{stage: variables}``."""
  os.makedirs(workdir, exist_ok=True)
  write_config_json(str(workdir), config)
  dataset = types.SimpleNamespace(name="tiny", num_classes=num_classes,
                                  image_shape=image_shape, class_names=list(class_names))
  pipeline._write_run_info(dataset, str(workdir))
  task = tasks.from_config(config)
  model = task.build_model(config, tasks.DataSpec(image_shape, num_classes))
  saved = {}
  for i, stage in enumerate(stages):
    saved[stage] = random_variables(model, i, image_shape)
    save_variables(os.path.join(workdir, "seed_0", stage, "variables"), saved[stage])
  return model, saved


def restoration_config():
  config = base_config()
  config.task = "restoration"
  config.methods = "oracle,fusiondistill"
  config.degradations = "awgn"
  config.restoration = ml_collections.ConfigDict(TINY_UNET)
  return config


@pytest.fixture(scope="module")
def restoration_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  model, saved = make_run(workdir, restoration_config(), (16, 16, 3),
                          ["fusiondistill", "clean"])
  return str(workdir), model, saved


ODD, SMALL = (37, 53, 3), (16, 16, 3)  # the sizes used throughout (few compilations)


@functools.lru_cache(maxsize=None)
def jitted_apply(model):
  return jax.jit(lambda v, x: model.apply(v, x, train=False)[0])


def reference_float(model, variables, image):
  """The model applied by hand: reflect-pad to its stride with numpy, input / 255,
  output x 255, crop, clip (float 0..255)."""
  h, w = image.shape[:2]
  s = model.stride
  padded = np.pad(image.astype(np.float32) / 255.0,
                  [(0, -h % s), (0, -w % s), (0, 0)], mode="reflect")
  out = np.asarray(jitted_apply(model)(variables, padded[None])[0])
  return np.clip(out[:h, :w] * 255.0, 0, 255)


def reference_restore(model, variables, image):
  """``reference_float`` rounded half to even to uint8."""
  return np.rint(reference_float(model, variables, image)).astype(np.uint8)


def test_restorer_returns_the_models_rounded_output_at_any_size(restoration_run):
  workdir, model, saved = restoration_run
  predict = load_predictor(workdir, "fusiondistill")
  assert predict.kind == "image" and model.stride == 2
  rng = np.random.default_rng(0)
  for shape in [ODD, SMALL]:
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    out = predict(image)
    assert out.dtype == np.uint8 and out.shape == shape
    expected = reference_restore(model, saved["fusiondistill"], image)
    # Float rounding at .5 boundaries may differ by one grey level on very few pixels.
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert np.mean(out != expected) < 1e-3
    assert np.abs(out.astype(int) - image).mean() > 1  # the random model changes the image
  # Another stage of the same run is another model.
  clean = fdjax.load_predictor(workdir, "clean")(image)  # the package-level name
  assert np.array_equal(clean, reference_restore(model, saved["clean"], image))
  assert not np.array_equal(clean, out)


def test_self_ensemble_restorer_averages_the_eight_flips_and_rotations(restoration_run, tmp_path,
                                                                       capsys):
  workdir, model, saved = restoration_run
  image = np.random.default_rng(3).integers(0, 256, ODD, dtype=np.uint8)
  outs = []
  for i in range(8):   # numpy's 4 rotations, each with and without a left-right flip
    t = np.rot90(image, i % 4)
    t = np.ascontiguousarray(t[:, ::-1] if i >= 4 else t)
    o = reference_float(model, saved["fusiondistill"], t)
    o = o[:, ::-1] if i >= 4 else o
    outs.append(np.rot90(o, -(i % 4)))
  expected = np.rint(np.mean(outs, axis=0)).astype(np.uint8)
  got = load_predictor(workdir, "fusiondistill", self_ensemble=8)(image)
  assert np.abs(got.astype(int) - expected).max() <= 1 and np.mean(got != expected) < 1e-3
  assert np.mean(got != reference_restore(model, saved["fusiondistill"], image)) > 0.1
  # The command line's flag gives the same image.
  Image.fromarray(image).save(tmp_path / "a.png")
  run_cli(f"--run={workdir}", f"--input={tmp_path / 'a.png'}", f"--output={tmp_path / 'out'}",
          "--self_ensemble=8")
  assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "a.png")), got)
  assert "x8 self-ensemble" in capsys.readouterr().out
  with pytest.raises(UserError, match=r"0 \(none\), 2 \(left-right flip\) or 8"):
    load_predictor(workdir, "fusiondistill", self_ensemble=4)


def test_tiled_inference_is_close_to_whole_image(restoration_run, monkeypatch):
  workdir = restoration_run[0]
  tiled_calls = []
  original = inference.apply_tiled
  monkeypatch.setattr(inference, "apply_tiled",
                      lambda *a, **k: tiled_calls.append(k) or original(*a, **k))
  image = np.random.default_rng(1).integers(0, 256, ODD, dtype=np.uint8)
  whole = load_predictor(workdir, tiling=None)(image)
  # The tiny U-Net sees about 11 pixels around each output pixel: a 12-pixel margin
  # gives the whole-image result up to float rounding; a 2-pixel margin does not.
  exact = Tiling(max_pixels=32 * 32, tile=40, overlap=24, margin=12)
  tiled = load_predictor(workdir, tiling=exact)(image)
  assert len(tiled_calls) == 1 and tiled_calls[0]["tile"] == 40
  assert tiled.shape == whole.shape
  assert np.abs(tiled.astype(int) - whole).max() <= 1
  rough = load_predictor(workdir, tiling=Tiling(max_pixels=32 * 32, tile=40, overlap=24,
                                                margin=2))(image)
  assert np.abs(rough.astype(int) - whole).max() > 1
  # Images within max_pixels are not tiled.
  load_predictor(workdir, tiling=exact)(image[:SMALL[0], :SMALL[1]])
  assert len(tiled_calls) == 2


def test_restorer_rejects_bad_images(restoration_run):
  predict = load_predictor(restoration_run[0])
  assert len(repr(predict)) < 300   # not every variable (84,000 characters for a ResNet)
  with pytest.raises(UserError, match="uint8"):
    predict(np.zeros((8, 8, 3), np.float32))
  with pytest.raises(UserError, match=r"\[8, 8\]"):
    predict(np.zeros((8, 8), np.uint8))
  # A list of images of two sizes: numpy's own ValueError ("inhomogeneous shape") before.
  with pytest.raises(UserError, match=r"one size; got 2 images of shapes \[8, 8, 3\], "
                                      r"\[9, 8, 3\]: pass them one at a time"):
    predict([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)])


def test_run_errors_are_one_line_user_errors(restoration_run, tmp_path):
  workdir = restoration_run[0]
  with pytest.raises(RunError, match="does not exist"):
    load_predictor(str(tmp_path / "nowhere"))
  with pytest.raises(RunError, match="config.json"):
    load_predictor(str(tmp_path))
  with pytest.raises(UnknownModelError, match="no single model"):
    load_predictor(workdir, "ensemble")
  # A misspelt name: the nearest of the run's models, not every method's names.
  with pytest.raises(UnknownModelError, match=r"'fusiondistil' \(did you mean "
                                              r"'fusiondistill'\?\); run .* has clean, ") as err:
    load_predictor(workdir, "fusiondistil")
  assert "ea_adam" not in str(err.value)
  # In config.methods (oracle) but no variables: not finished, with the command.
  with pytest.raises(StageNotFinishedError, match="'experts/awgn'") as err:
    load_predictor(workdir, "expert_awgn")
  for name in ("Expert_awgn", "expert_AWGN"):   # as case-blind as every other name
    with pytest.raises(StageNotFinishedError, match="'experts/awgn'"):
      load_predictor(workdir, name)
  assert "python -m fdjax.main" in err.value.hint and "--config.methods=oracle" in err.value.hint
  # Not in config.methods: the run lacks it; the message lists what it has.
  with pytest.raises(ModelNotInRunError, match="clean, fusiondistill"):
    load_predictor(workdir, "fusing")
  with pytest.raises(RunError, match="no seed 3"):
    load_predictor(workdir, seed=3)
  with pytest.raises(RunError, match="seed must be an integer, one of the run's seeds 0; "
                                     "got '0'"):   # was "has no seed 0; its seeds: 0"
    load_predictor(workdir, seed="0")
  with pytest.raises(RunError, match="is a file, not a folder"):
    load_predictor(os.path.join(workdir, "run.json"))
  with pytest.raises(UnknownModelError, match="names no degradation"):
    load_predictor(workdir, "expert_")
  with pytest.raises(UnknownModelError, match="has no K"):   # only the MoE student routes
    load_predictor(workdir, "fusiondistill", k=1)
  damaged = tmp_path / "damaged"   # a run.json without the image shape
  shutil.copytree(workdir, damaged)
  (damaged / "run.json").write_text(json.dumps({"dataset": "x"}))
  with pytest.raises(RunError, match="lacks image_shape"):
    load_predictor(str(damaged))


def test_unfinished_stage_names_the_stage(tmp_path):
  config = restoration_config()
  config.methods = "fusing"
  make_run(tmp_path, config, (16, 16, 3), [])
  os.makedirs(tmp_path / "seed_0" / "fusing" / "checkpoints")
  with pytest.raises(StageNotFinishedError, match="stage 'fusing' has no saved variables"):
    load_predictor(str(tmp_path), "fusing")


def test_modelsoups_names_load_the_soup_the_run_built(tmp_path):
  """Restoration models have no BatchNorm: every ModelSoups variant is the one soup of
  ``fused/<fusion.init_batch_stats>`` (``stages.fusion_modes``), whatever its name."""
  config = restoration_config()
  config.methods = "oracle,modelsoups"
  config.fusion.init_batch_stats = "paper"
  make_run(tmp_path, config, (16, 16, 3), ["fused/paper", "experts/awgn"])
  want = os.path.join(str(tmp_path), "seed_0", "fused", "paper", "variables")
  for name in ("ModelSoups", "modelsoups", "modelsoups_average", "modelsoups_reestimate"):
    assert load_lib.model_path(str(tmp_path), methods_lib.model_name(name, None)[0], 0,
                                 config) == want
  with pytest.raises(ModelNotInRunError, match="its degradations are awgn") as err:
    load_predictor(str(tmp_path), "expert_snow")      # Oracle ran: no such degradation
  assert err.value.hint == "load one of expert_awgn"
  # The finished models a message lists: the soup under every ModelSoups name.
  assert {"modelsoups", "modelsoups_average", "expert_awgn"} <= set(
      load_lib.available_models(str(tmp_path), 0, config))


def test_a_batchnorm_soup_variant_the_run_left_out_is_named_so(tmp_path):
  config = base_config()
  config.methods, config.degradations = "modelsoups", "jpeg"
  config.fusion.modelsoups_variants = "paper,reestimate"
  with pytest.raises(ModelNotInRunError, match="'average' .* is not one the run built") as err:
    load_lib.model_path(str(tmp_path), "modelsoups", 0, config)
  assert err.value.hint == "load one of modelsoups_paper, modelsoups_reestimate"


def write_images(folder, shapes, ext=".png"):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(2)
  images = {}
  for i, shape in enumerate(shapes):
    images[f"img{i}{ext}"] = rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(images[f"img{i}{ext}"]).save(os.path.join(folder, f"img{i}{ext}"))
  return images


def run_cli(*args):
  """``python -m fdjax.apply`` in-process: parses ``args`` and calls its ``main``."""
  run_main(apply_cli.main, "fdjax.apply", *args)


def test_cli_restores_a_folder(restoration_run, tmp_path, capsys):
  workdir, model, saved = restoration_run
  images = write_images(tmp_path / "in", [ODD, SMALL])
  Image.fromarray(images["img0.png"]).save(tmp_path / "in" / "img2.bmp")
  grey = images["img1.png"][..., 1]
  Image.fromarray(grey).save(tmp_path / "in" / "img3.pgm")   # any extension the data layer reads
  (tmp_path / "in" / "notes.txt").write_text("not an image")
  (tmp_path / "in" / "._img0.png").write_bytes(b"macOS resource fork")   # hidden: left out
  run_cli(f"--run={workdir}", "--method=fusiondistill", f"--input={tmp_path / 'in'}",
          f"--output={tmp_path / 'out'}")
  assert sorted(os.listdir(tmp_path / "out")) == ["img0.png", "img1.png", "img2.png", "img3.png"]
  for name, image in [*images.items(), ("img2.png", images["img0.png"])]:
    written = np.asarray(Image.open(tmp_path / "out" / name))
    assert np.array_equal(written, reference_restore(model, saved["fusiondistill"], image))
  # the greyscale file comes back greyscale: the restored image's full-range luma
  restored = reference_restore(model, saved["fusiondistill"],
                               np.repeat(grey[..., None], 3, axis=-1)).astype(np.float64)
  luma = np.clip(np.rint(restored @ [65.481, 128.553, 24.966] / 219), 0, 255)
  assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "img3.png")), luma)
  out = capsys.readouterr().out
  assert "img0.png  53x37" in out and "img2.bmp  53x37" in out and "._img0" not in out
  assert f"Wrote 4 PNG(s) to {tmp_path / 'out'}" in out
  assert ("1 entry left out (sub-folders are not searched; other file types are not read): "
          "notes.txt") in out


def test_cli_keeps_the_colour_profile_names_frames_and_subfolders(restoration_run, tmp_path,
                                                                  capsys):
  from PIL import ImageCms

  workdir = restoration_run[0]
  (tmp_path / "in" / "sub").mkdir(parents=True)
  profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
  grey_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
  rng = np.random.default_rng(5)
  Image.fromarray(rng.integers(0, 256, SMALL, dtype=np.uint8)).save(
      tmp_path / "in" / "photo.jpg", icc_profile=profile)
  Image.fromarray(rng.integers(0, 256, SMALL[:2], dtype=np.uint8)).save(
      tmp_path / "in" / "lab.png", icc_profile=grey_profile)   # not an RGB profile
  # a grey profile (its header's colour space 'GRAY') describes a greyscale output: kept
  grey_space = profile[:16] + b"GRAY" + profile[20:]
  Image.fromarray(rng.integers(0, 256, SMALL[:2], dtype=np.uint8)).save(
      tmp_path / "in" / "grey.png", icc_profile=grey_space)
  frames = [Image.fromarray(rng.integers(0, 256, SMALL, dtype=np.uint8)) for _ in range(3)]
  frames[0].save(tmp_path / "in" / "anim.gif", save_all=True, append_images=frames[1:])
  run_cli(f"--run={workdir}", f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'out'}")
  with Image.open(tmp_path / "out" / "photo.png") as written:
    assert written.info.get("icc_profile") == profile
  with Image.open(tmp_path / "out" / "grey.png") as written:
    assert written.mode == "L" and written.info.get("icc_profile") == grey_space
  for name in ("anim.png", "lab.png"):   # no profile; one that would misdescribe it
    with Image.open(tmp_path / "out" / name) as written:
      assert "icc_profile" not in written.info
  # the one-channel photo comes back one channel, the RGB ones three
  with Image.open(tmp_path / "out" / "lab.png") as grey, \
       Image.open(tmp_path / "out" / "photo.png") as colour:
    assert (grey.mode, grey.size, colour.mode) == ("L", SMALL[:2], "RGB")
  out = capsys.readouterr().out
  assert "anim.gif  16x16" in out and "(its first frame of 3)" in out
  assert "1 entry left out (sub-folders are not searched" in out and "sub/" in out
  empty = tmp_path / "only_sub"
  (empty / "inner").mkdir(parents=True)
  with pytest.raises(SystemExit):
    run_cli(f"--run={workdir}", f"--input={empty}", f"--output={tmp_path / 'o3'}")
  assert "1 entry left out (sub-folders are not searched" in capsys.readouterr().err


def test_cli_skips_an_unreadable_image_and_exits_2_naming_it(restoration_run, tmp_path,
                                                             capsys):
  workdir, model, saved = restoration_run
  images = write_images(tmp_path / "in", [ODD, SMALL])
  (tmp_path / "in" / "img0b.png").write_bytes(b"\x89PNG truncated")   # sorts between them
  with pytest.raises(SystemExit) as exit_info:
    run_cli(f"--run={workdir}", f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'out'}")
  assert exit_info.value.code == 2
  # The images after the corrupt one are restored all the same.
  assert sorted(os.listdir(tmp_path / "out")) == ["img0.png", "img1.png"]
  written = np.asarray(Image.open(tmp_path / "out" / "img1.png"))
  assert np.array_equal(written, reference_restore(model, saved["fusiondistill"],
                                                   images["img1.png"]))
  captured = capsys.readouterr()
  assert "img0b.png  skipped: cannot read image" in captured.out
  assert f"Wrote 2 PNG(s) to {tmp_path / 'out'}" in captured.out
  assert captured.err.strip().splitlines() == [
      "error: 1 of 3 image(s) could not be read and were skipped: img0b.png"]


def test_cli_user_errors_exit_2_with_one_line(restoration_run, tmp_path, capsys):
  workdir = restoration_run[0]
  write_images(tmp_path / "in", [(8, 8, 3)])
  cases = [([f"--run={tmp_path / 'missing'}"], "does not exist"),
           ([f"--run={workdir}", "--method=fusing"], "has no model 'fusing'"),
           ([f"--run={workdir}", "--method=expert_awgn"], "is not finished"),
           ([f"--run={workdir}", f"--output={tmp_path / 'in' / 'img0.png'}"], "is a file"),
           ([f"--run={workdir}", "--max_pixels=-1"],
            "--max_pixels >= 0 (0: never), --tile >= 1 and 0 <= --overlap < --tile, got "
            "--max_pixels=-1 --tile=512 --overlap=64")]
  for args, needle in cases:
    with pytest.raises(SystemExit) as exit_info:   # the last --output given wins
      run_cli(f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'out'}", *args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("error:") and needle in lines[0], lines
    assert "Traceback" not in "".join(lines)
  before = (tmp_path / "in" / "img0.png").read_bytes()
  os.symlink(tmp_path / "in", tmp_path / "link")   # the input folder under another name
  for output in (tmp_path / "in", tmp_path / "link", tmp_path / "link" / "." / ""):
    with pytest.raises(SystemExit):
      run_cli(f"--run={workdir}", f"--input={tmp_path / 'in'}", f"--output={output}")
    captured = capsys.readouterr()   # the error alone, not after a line that it starts
    assert "holds the input images" in captured.err and "Restoring" not in captured.out
  assert (tmp_path / "in" / "img0.png").read_bytes() == before
  # Tiles that cannot advance on the network's stride: refused before any image is read.
  with pytest.raises(SystemExit) as exit_info:
    run_cli(f"--run={workdir}", f"--input={tmp_path / 'in'}", f"--output={tmp_path / 'o2'}",
            "--max_pixels=1", "--tile=9", "--overlap=8")
  lines = capsys.readouterr().err.strip().splitlines()
  assert exit_info.value.code == 2 and len(lines) == 1 and "stride" in lines[0], lines
  assert not (tmp_path / "o2").exists()


def test_output_names_that_differ_only_in_case_collide():
  # Dup.png and dup.png are one file on the default macOS and Windows file systems.
  from fdjax.errors import DataError
  assert apply_cli.output_names(["a/x.jpg", "a/y.png"]) == ["x.png", "y.png"]
  with pytest.raises(DataError, match="Dup.bmp and a/dup.gif would both be written .*in case"):
    apply_cli.output_names(["a/Dup.bmp", "a/dup.gif"])
  with pytest.raises(DataError, match="a.png and a/a.jpg would both be written as a.png; "):
    apply_cli.output_names(["a/a.png", "a/a.jpg"])     # the same name: no remark on case


def test_a_name_clash_leaves_no_output_folder_behind(tmp_path):
  from fdjax.errors import DataError
  files = [str(tmp_path / "a.png"), str(tmp_path / "a.jpg")]
  with pytest.raises(DataError, match="would both be written"):
    apply_cli.restore_files(lambda image: image, files, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_each_input_file_is_opened_once(tmp_path, monkeypatch):
  """The image and what its file says of the output (profile, frames, one channel) come
  from one opening of the file."""
  (tmp_path / "in").mkdir()
  rng = np.random.default_rng(3)
  Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "in" / "g.png")
  Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "in" / "c.png")
  opened, real_open = [], Image.open
  monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(str(path)) or
                      real_open(path, *a, **k))
  files = sorted(str(f) for f in (tmp_path / "in").iterdir())
  written = apply_cli.restore_files(lambda image: image, files, str(tmp_path / "out"))
  assert sorted(p for p in opened if p.startswith(str(tmp_path / "in"))) == files
  monkeypatch.setattr(Image, "open", real_open)
  with Image.open(written[files.index(str(tmp_path / "in" / "g.png"))]) as grey:
    assert grey.mode == "L"   # its one channel read from that same opening


@pytest.mark.filterwarnings("ignore:Truncated File Read")   # PIL's, on the cut file
def test_a_damaged_later_page_leaves_the_first_page_readable(tmp_path):
  """A multi-page TIFF cut short (a broken download) whose first page decodes but whose
  page count cannot be read is restored as one page, not skipped."""
  rng = np.random.default_rng(4)
  pages = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(3)]
  pages[0].save(tmp_path / "whole.tif", save_all=True, append_images=pages[1:])
  data = (tmp_path / "whole.tif").read_bytes()
  cut = tmp_path / "cut.tif"

  def page_count_fails(size):   # the first page reads, its page count does not
    cut.write_bytes(data[:size])
    try:
      with Image.open(cut) as im:
        first = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError):
      return False
    try:
      with Image.open(cut) as im:
        im.n_frames
    except (OSError, SyntaxError, ValueError):
      return np.array_equal(first, np.asarray(pages[0]))
    return False

  size = next((n for n in range(len(data) - 1, 0, -1) if page_count_fails(n)), None)
  assert size is not None, "no cut of the file reads its first page but not its page count"
  image, (profile, frames, grey) = image_files.read_image_file(str(cut))
  np.testing.assert_array_equal(image, np.asarray(pages[0]))
  assert (profile, frames, grey) == (None, 1, False)


def test_cli_classification_writes_a_csv(tmp_path, capsys):
  config = base_config()
  config.data.source = "digits"
  config.data.normalization = "unit"
  config.model.depth = 8
  config.methods = "fusiondistill"
  names = [f"c{i}" for i in range(10)]
  model, saved = make_run(tmp_path / "run", config, (8, 8, 3), ["fusiondistill"],
                          num_classes=10, class_names=names)
  images = write_images(tmp_path / "in", [(8, 8, 3), (8, 8, 3), (12, 10, 3)])
  (tmp_path / "in" / "img1b.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  with pytest.raises(SystemExit) as exit_info:   # the unreadable file: skipped, exit 2
    run_cli(f"--run={tmp_path / 'run'}", f"--input={tmp_path / 'in'}",
            f"--output={tmp_path / 'out'}")
  assert exit_info.value.code == 2
  captured = capsys.readouterr()
  assert "skipped: img1b.jpg" in captured.err and "Wrote predictions to" in captured.out
  with open(tmp_path / "out" / "predictions.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["file"] for r in rows] == sorted(images)
  # Reference: the model on the images resized by PIL, normalised by hand ('unit').
  resized = np.stack([np.asarray(Image.open(tmp_path / "in" / r["file"]).resize(
      (8, 8), Image.BICUBIC)) for r in rows]).astype(np.float32)
  logits = jitted_apply(model)(saved["fusiondistill"], (resized - 127.5) / 127.5)
  assert [int(r["class"]) for r in rows] == list(np.argmax(np.asarray(logits), -1))
  assert [r["label"] for r in rows] == [names[int(r["class"])] for r in rows]
  with pytest.raises(UserError, match="this run classifies"):
    load_predictor(str(tmp_path / "run"), self_ensemble=8)


def test_read_image_converts_16_bit_grey_and_applies_exif_rotation(tmp_path):
  grey16 = np.array([[0, 257 * 100, 65535]], np.uint16)
  Image.fromarray(grey16).save(tmp_path / "g.png")
  assert Image.open(tmp_path / "g.png").mode.startswith("I")
  np.testing.assert_array_equal(image_files.read_image_file(str(tmp_path / "g.png"))[0][..., 0],
                                [[0, 100, 255]])
  rgb = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
  exif = Image.Exif()
  exif[0x0112] = 6  # orientation: shown rotated 90 degrees clockwise
  Image.fromarray(rgb).save(tmp_path / "r.png", exif=exif)
  np.testing.assert_array_equal(image_files.read_image_file(str(tmp_path / "r.png"))[0],
                                np.rot90(rgb, -1))
  with pytest.raises(UserError, match="cannot read image"):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    image_files.read_image_file(str(tmp_path / "bad.png"))


def test_read_image_refuses_pils_decompression_bombs_but_the_command_lifts_the_limit(
    restoration_run, tmp_path, monkeypatch):
  write_images(tmp_path / "in", [SMALL])
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)   # the image is over 2 x the limit
  with pytest.raises(UserError, match="cannot read image .*exceeds limit"):
    image_files.read_image_file(str(tmp_path / "in" / "img0.png"))
  # The command reads the user's own files whatever their size (it tiles large ones).
  run_cli(f"--run={restoration_run[0]}", f"--input={tmp_path / 'in'}",
          f"--output={tmp_path / 'out'}")
  assert os.listdir(tmp_path / "out") == ["img0.png"]


def test_a_classifier_labels_every_image_of_a_batch_larger_than_its_chunk(tmp_path):
  # image_classifier runs a batch in chunks of batch_size: 5 images in chunks of 2 get 5
  # labels, each the arg-max of the model's logits on it. load_model's default seed is
  # the smallest of the run's.
  from fdjax.predictor import image_classifier

  config = base_config()
  config.data.source, config.data.normalization, config.model.depth = "digits", "unit", 8
  config.methods = "fusiondistill"
  model, saved = make_run(tmp_path / "run", config, (8, 8, 3), ["fusiondistill"],
                          num_classes=10, class_names=[str(i) for i in range(10)])
  images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
  classify = image_classifier(tasks.from_config(config), model, saved["fusiondistill"],
                              (8, 8, 3), batch_size=2)
  logits = jitted_apply(model)(saved["fusiondistill"],
                               (images.astype(np.float32) - 127.5) / 127.5)
  np.testing.assert_array_equal(classify(images), np.argmax(np.asarray(logits), -1))
  shutil.copytree(tmp_path / "run" / "seed_0", tmp_path / "run" / "seed_3")
  shutil.copytree(tmp_path / "run" / "seed_0", tmp_path / "run" / "seed_1")
  assert fdjax.load_model(str(tmp_path / "run")).seed == 0
  shutil.rmtree(tmp_path / "run" / "seed_0")
  assert fdjax.load_model(str(tmp_path / "run")).seed == 1


def test_a_one_channel_output_is_the_full_range_luma_of_the_restored_image():
  from fdjax.apply import grey_uint8

  rng = np.random.default_rng(3)
  rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
  want = np.clip(np.rint(rgb.astype(np.float64) @ [65.481, 128.553, 24.966] / 219), 0, 255)
  np.testing.assert_array_equal(grey_uint8(rgb), want)
  grey = rng.integers(0, 256, (6, 7), dtype=np.uint8)   # equal channels: the value itself
  np.testing.assert_array_equal(grey_uint8(np.repeat(grey[..., None], 3, -1)), grey)


def test_a_run_without_the_default_model_says_method_was_left_out(tmp_path, capsys):
  # An EA-Adam run has no 'fusiondistill': without --method the hint offered to train
  # one, as if it had been asked for.
  config = restoration_config()
  config.methods = "oracle"
  make_run(tmp_path / "run", config, (16, 16, 3), ["clean"])
  write_images(tmp_path / "in", [(8, 8, 3)])
  for method, needle in (([], "(--method defaults to fusiondistill)"),
                         (["--method=fusiondistill"], "has no model 'fusiondistill'")):
    with pytest.raises(SystemExit):
      run_cli(f"--run={tmp_path / 'run'}", f"--input={tmp_path / 'in'}",
              f"--output={tmp_path / 'out'}", *method)
    lines = capsys.readouterr().err.strip().splitlines()
    assert needle in lines[0], lines
    assert ("choose one of its finished models" in lines[1]) == (not method), lines
