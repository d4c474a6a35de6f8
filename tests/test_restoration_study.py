"""The restoration study end to end (tiny U-Net, a few steps on the embedded photos):
rows Input, Oracle, ONE ModelSoups row (no BatchNorm: one fused model) and
FusionDistill-MoE (K=2) with its cost and routing columns and router usage, PSNR and SSIM
columns marked synthetic; the Input row's denoise PSNR equals numpy's on the same noisy
image; and the restoration config checks."""

import csv
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


def test_tiny_restoration_study(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(restoration_sets, "photos", small_photos)
  config = tiny()
  config.scoring.haze = "y"   # one column scored on Y: every row, Oracle's too, says so
  records = pipeline.run(config, str(tmp_path))
  # The console: one table per metric, PSNR's with the cost columns, then SSIM's.
  out = capsys.readouterr().out
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
