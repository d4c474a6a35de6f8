"""The restoration study end to end (tiny U-Net, a few steps on the embedded photos):
rows Input, Oracle, ONE ModelSoups row (no BatchNorm: one fused model) and
FusionDistill-MoE (K=2) with its cost and routing columns and router usage, PSNR and SSIM
columns marked synthetic; the Input row's denoise PSNR equals numpy's on the same noisy
image; and the restoration config checks."""

import contextlib
import csv
import io
import json
import os
import re
import pathlib

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity
from fdjax import degradations, pipeline
from fdjax.config_fields import load_config_file
from fdjax.data import restoration_sets
from fdjax.data.paired import PairedImages
from fdjax.degradations.plan import eval_key
from fdjax.errors import ConfigError
from fdjax.validate import validate_config

REPO = pathlib.Path(__file__).resolve().parents[1]
PHOTOS = restoration_sets.photos


def load_config(name: str, arg=None):
  path = REPO / "configs" / f"{name}.py"
  return load_config_file(f"{path}:{arg}" if arg else str(path))


def tiny():
  config = load_config("restoration_quickstart", "tiny")
  config.methods = "input,oracle,modelsoups,fusiondistill_moe"
  config.moe.ks = "2"      # one MoE row (K=1 is the same code at another k)
  config.degradations = "denoise,haze"
  config.fusion.weights = "1,1"
  config.data.tile = 32    # 4 x 5 tiles of the china.jpg crop: two steps per stage
  config.data.validation_fraction = 0.2
  config.restoration.update(patch=32, flip=False, rot90=False)  # a smaller step to compile
  config.batch_size = 8
  config.eval_batch_size = 2
  config.selection = "last"
  return config


def small_photos():
  """Crops of the two photos (fast): a 128x160 part of china.jpg, a 41x57 part of
  flower.jpg (odd sizes: padded to the U-Net's stride and cropped back)."""
  train, test = PHOTOS()
  return (PairedImages("photos", train.names, (train.targets[0][100:228, 200:360],)),
          PairedImages("photos", test.names, (test.targets[0][150:191, 300:357],)))


def study_config():
  config = tiny()
  config.scoring.haze = "y"   # one column scored on Y: every row, Oracle's too, says so
  return config


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
  """``(workdir, records, console output)`` of the tiny study, run once for this module:
  the self-ensemble test below re-evaluates its stages."""
  workdir = tmp_path_factory.mktemp("tiny_study")
  out = io.StringIO()
  with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
    patch.setattr(restoration_sets, "photos", small_photos)
    records = pipeline.run(study_config(), str(workdir))
  return workdir, records, out.getvalue()


def test_tiny_restoration_study(tiny_study):
  tmp_path, records, out = tiny_study
  # The console: one table per metric, PSNR's with the cost columns, then SSIM's.
  headers = [line for line in out.splitlines() if line.startswith("| method |")]
  assert len(headers) == 2 and "SSIM" not in headers[0] and "params" in headers[0]
  assert headers[1].split("|")[3].strip() == "SSIM clean (RGB)" and "params" not in headers[1]
  assert "SSIM (0..1), higher is better:" in out
  rows = {label: results for label, _, results in records}
  assert list(rows) == ["Input", "Oracle", "ModelSoups", "FusionDistill-MoE (K=2)"]
  for results in rows.values():
    assert results["scoring"]["haze"] == "Y" and results["scoring"]["denoise"] == "RGB"
  # The MoE student loads at any K of its 2 experts, and only those (k checked after
  # the model: fdjax.load).
  from fdjax import load_model
  from fdjax.errors import UserError
  assert load_model(str(tmp_path), "fusiondistill_moe", k=1).model.k == 1
  with pytest.raises(UserError, match=r"k=3: the run's MoE student has 2 experts"):
    load_model(str(tmp_path), "fusiondistill_moe", k=3)
  assert sorted(os.listdir(tmp_path / "seed_0" / "fused")) == ["average"]
  flower = small_photos()[1].targets[0]
  noisy = np.asarray(degradations.apply("denoise", eval_key(301, "denoise", 25, 0),
                                        np.stack([flower, np.zeros_like(flower)]), 25.0))[0]
  mse = np.mean((noisy.astype(np.float64) - flower) ** 2)
  assert rows["Input"]["denoise"]["all"] == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-3)
  assert rows["Input"]["clean"] is None
  # per_image.csv: one line per row, task, level and image; the Input row's values are
  # numpy's PSNR and scikit-image's SSIM (Gaussian 11x11, sigma 1.5) of the noisy image.
  with open(tmp_path / "per_image.csv") as f:
    lines = list(csv.DictReader(f))
  assert len(lines) == 4 * 2 and {l["image"] for l in lines} == {"flower"}
  line = next(l for l in lines if l["row"] == "Input" and l["degradation"] == "denoise")
  assert (line["seed"], line["test_set"], float(line["level"])) == ("0", "photos", 25.0)
  assert float(line["psnr"]) == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-3)
  ssim = structural_similarity(flower, noisy, channel_axis=-1, gaussian_weights=True,
                               sigma=1.5, use_sample_covariance=False, data_range=255)
  assert float(line["ssim"]) == pytest.approx(ssim, abs=1e-3)
  # One example grid per task: input | Oracle | ModelSoups | MoE | target, one row (the
  # 41x57 image fits a cell whole); cells counted from the right edge (image_grid layout).
  for name in ("denoise", "haze"):
    grid = np.asarray(Image.open(tmp_path / f"examples_{name}.png").convert("RGB"))
    y, right = 16 + 4, grid.shape[1]
    cell = lambda c: grid[y:y + 41, right - (5 - c) * (57 + 4):right - (5 - c) * (57 + 4) + 57]
    np.testing.assert_array_equal(cell(4), flower)
    if name == "denoise":
      np.testing.assert_array_equal(cell(0), noisy)
  for results in rows.values():
    assert results["denoise"]["synthetic"] and results["denoise"]["test_set"] == "photos"
    assert 0 < results["metrics"]["ssim"]["haze"]["all"] <= 1
  saved = json.loads((tmp_path / "results.json").read_text())
  # Oracle: the clean model and 2 experts; ModelSoups: 1 fused model
  params = {row: saved["extra"][row]["params"] for row in rows}
  assert params["Input"] == 0 and params["Oracle"] == 3 * params["ModelSoups"] > 0
  moe = saved["extra"]["FusionDistill-MoE (K=2)"]  # 2 copies of decoder1's block + router
  assert params["ModelSoups"] < moe["params"] == moe["active params"] < params["Oracle"]
  assert moe["FLOPs/img (rel.)"] > 1 and 0 <= moe["routing acc. (non-clean)"] <= 100
  usage = (tmp_path / "router_usage.md").read_text()   # pixels per expert, each row 100%
  for name in ("denoise", "haze"):
    row = next(line for line in usage.splitlines() if line.startswith(f"| {name} |"))
    assert sum(float(v) for v in row.split("|")[2:4]) == pytest.approx(100, abs=0.15)
  assert saved["test_sets"]["haze"] == {"test_set": "photos", "synthetic": True}
  table = (tmp_path / "results.md").read_text()
  assert "denoise (photos, synthetic, RGB)" in table and "haze (photos, synthetic, Y)" in table
  assert "SSIM avg" in table


def test_a_finished_run_re_evaluated_with_the_self_ensemble(tiny_study, tmp_path, monkeypatch):
  """A finished run (the tiny study's own: a copy, since reruns rewrite results.json)
  re-evaluated with eval.self_ensemble reuses every stage and scores the mean over the 8
  transforms (or the input and its mirror image), checked against the model applied by
  hand (fdjax.eval.self_ensemble; its unit tests: tests/test_self_ensemble.py)."""
  import shutil

  import fdjax
  from test_self_ensemble import TRANSFORMS, numpy_transform, numpy_untransform

  monkeypatch.setattr(restoration_sets, "photos", small_photos)
  shutil.copytree(tiny_study[0], tmp_path, dirs_exist_ok=True)   # file times kept
  config = study_config()
  config.methods = "input,modelsoups"
  plain = {row: r for row, _, r in tiny_study[1]}
  stage_files = {p: os.path.getmtime(p) for p in
                 (tmp_path / "seed_0").glob("*/**/variables/*")}
  config.eval.self_ensemble = 8
  # What a write killed hard left in the first run's workdir goes with the next run.
  stale = tmp_path / "seed_0" / "eval" / "input.json.4321.tmp"
  stale.write_text('{"half')
  os.utime(stale, (1e9, 1e9))
  x8 = {row: r for row, _, r in pipeline.run(config, str(tmp_path))}
  assert not stale.exists()
  saved = json.loads((tmp_path / "results.json").read_text())
  markdown = (tmp_path / "results.md").read_text()
  config.eval.self_ensemble = 2
  x2 = {row: r for row, _, r in pipeline.run(config, str(tmp_path))}
  # Every stage reused (no stage file rewritten); an evaluation folder per setting.
  assert stage_files and all(os.path.getmtime(p) == t for p, t in stage_files.items())
  folders = os.listdir(tmp_path / "seed_0" / "eval")
  single = [f for f in folders if "_x" not in f]
  assert len(folders) == 3 and len(single) == 1
  assert {f.replace("_x8", "").replace("_x2", "") for f in folders} == set(single)
  # The Input row is the identity: the same under every transform.
  assert x8["Input"]["denoise"]["all"] == pytest.approx(plain["Input"]["denoise"]["all"],
                                                        abs=1e-4)
  # ModelSoups' PSNR at sigma 25 against the model applied by hand to numpy's transforms
  # of the same noisy image, averaged, scored by numpy: all 8, then 0 and the flip (4).
  flower = small_photos()[1].targets[0]
  noisy = np.asarray(degradations.apply("denoise", eval_key(301, "denoise", 25, 0),
                                        np.stack([flower, np.zeros_like(flower)]), 25.0))[:1]
  loaded = fdjax.load_model(str(tmp_path), "modelsoups")
  outs = [numpy_untransform(np.asarray(loaded.predict(
      np.ascontiguousarray(numpy_transform(noisy, i)))), i) for i in range(TRANSFORMS)]
  psnr = lambda images: 10 * np.log10(255 ** 2 / np.mean(
      (np.mean(np.asarray(images, np.float64), axis=0)[0] - flower) ** 2))
  assert x8["ModelSoups"]["denoise"]["all"] == pytest.approx(psnr(outs), abs=2e-3)
  assert x2["ModelSoups"]["denoise"]["all"] == pytest.approx(psnr([outs[0], outs[4]]), abs=2e-3)
  values = {r["ModelSoups"]["denoise"]["all"] for r in (plain, x8, x2)}
  assert max(values) - min(values) > 1e-3 and len(values) == 3
  # Said in results.md and results.json.
  assert "x8 self-ensemble" in markdown and saved["test_time"].startswith("x8")
  assert "x2 self-ensemble" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("field,value,fragment", [
    ("restoration.widht", 8, "did you mean restoration.width"),
    ("restoration.loss", "l2", "restoration.loss must be one of"),
    ("restoration.patch", 30, "multiple of the U-Net stride"),
    ("data.tile", 16, "data.tile must be 0 (twice restoration.patch) or at least "
                      "restoration.patch = 48"),
    ("data.tile", -48, "data.tile must be 0"),
    ("distill_feature", "stage3", "distill_feature must be one of the model's features"),
    ("moe.dispatch", "sparse", "moe.dispatch='sparse' is the classifier student's option"),
    ("moe.stages", "stage3", "some of ['encoder1', 'encoder2', 'middle', 'decoder1', "
                             "'decoder2']; got 'stage3'"),
    ("data.source", "digits", "data.source must be one of ('photos', 'sets')"),
    ("eval_levels.denoise", "15,25.5", "eval_levels.denoise"),
    ("restoration.width", 0, "restoration.width must be an integer >= 1"),
    ("restoration.depth", -1, "restoration.depth must be an integer in 0..6"),
    ("restoration.shave", -2, "restoration.shave must be an integer >= 0"),
    # the classifier's fields, which a restorer never read (a changed one retrained)
    ("augment.flip", False, "augment.flip: config.augment is the classifier's"),
    ("data.normalization", "imagenet", "data.normalization='imagenet': the classifier's "
                                       "input normalization"),
])
def test_restoration_config_errors(field, value, fragment):
  config = load_config("restoration_quickstart")
  *blocks, last = field.split(".")
  node = config
  for b in blocks:
    node = node[b]
  with node.unlocked() if hasattr(node, "unlocked") else node:
    node[last] = value
  with pytest.raises(ConfigError, match=re.escape(fragment)):
    validate_config(config)


def test_feature_names_are_the_features_returned():
  import jax
  import jax.numpy as jnp

  from fdjax.models import NAFNet, UNet, cifar_resnet

  for model in (UNet(width=4, depth=2), NAFNet(width=4, depth=1), cifar_resnet(8, 10)):
    x = jnp.zeros((1, 32, 32, 3))
    features = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), x), x)[1])
    assert sorted(features) == sorted(model.feature_names)


def test_restoration_overrides_and_unknown_fields():
  from fdjax import tasks
  from fdjax.config_fields import unknown_field_message

  config = load_config("restoration_quickstart")
  config.lock()
  config.restoration.width = 32  # what --config.restoration.width=32 does
  assert tasks.from_config(config).build_model(config, tasks.DataSpec((48, 48, 3))).width == 32
  with pytest.raises(AttributeError):
    config.restoration.widht = 8
  assert "'restoration.width'" in unknown_field_message(config, "restoration.widht")


def test_missing_restoration_set_is_one_clear_error(tmp_path):
  import ml_collections

  from fdjax.errors import MissingDataError

  config = load_config("restoration_3task", "smoke")
  config.data.root = str(tmp_path)
  with pytest.raises(MissingDataError, match="restoration set 'cbsd432' not found"):
    restoration_sets.load(config.data, patch=32)
  config.data.root = str(tmp_path / "nowhere")
  with pytest.raises(MissingDataError, match="does not exist"):
    restoration_sets.load(config.data, patch=32)
  assert isinstance(config.data, ml_collections.ConfigDict)
