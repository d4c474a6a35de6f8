"""Test-only independent references for NIQE: BasicSR's ``basicsr/metrics/niqe.py`` (the
file as the installed ``basicsr`` package ships it, with its MATLAB pristine parameters)
and a NumPy transcription of MATLAB's bicubic ``imresize``.

BasicSR's package ``__init__`` imports torch, cv2 and the whole toolbox, none of which
fdjax needs. So ``basicsr`` is located without importing it (``find_spec``), and only the
``niqe.py`` module is executed, with the four imports it names at its top stubbed: cv2
and the registry are unused by ``niqe()``, the Y conversion is done by the caller, and
``imresize`` (torch in BasicSR) is ``matlab_imresize_numpy`` below, a loop-and-padding
transcription of BasicSR's ``matlab_functions.imresize`` written independently of
``fdjax.eval.matlab_imresize`` (and checked against Pillow's bicubic away from the
borders in ``test_niqe.py``).

Install (test only, no dependencies: they would pull in torch)::

    pip install --no-deps basicsr==1.4.2
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np


def basicsr_metrics_dir() -> Path | None:
  """``<site-packages>/basicsr/metrics`` when BasicSR is installed, without importing it."""
  spec = importlib.util.find_spec("basicsr")
  if spec is None or not spec.submodule_search_locations:
    return None
  folder = Path(list(spec.submodule_search_locations)[0]) / "metrics"
  needed = ("niqe.py", "niqe_pris_params.npz")
  return folder if all((folder / n).is_file() for n in needed) else None


def _cubic(x):
  ax = np.abs(x)
  return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
          + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _resize_axis(img: np.ndarray, scale: float) -> np.ndarray:
  """Resizes axis 0 of ``img`` as MATLAB: symmetric padding, then each output row the
  weighted sum of ``p`` padded input rows (BasicSR's ``calculate_weights_indices``)."""
  n = img.shape[0]
  out = math.ceil(n * scale)
  width = 4.0 / scale if scale < 1 else 4.0
  pad = int(math.ceil(width)) + 2
  padded = np.pad(img, [(pad, pad)] + [(0, 0)] * (img.ndim - 1), mode="symmetric")
  rows = []
  for x in range(1, out + 1):
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = math.floor(u - width / 2)
    idx = np.arange(left, left + math.ceil(width) + 2)           # 1-based input indices
    k = scale * _cubic((u - idx) * scale) if scale < 1 else _cubic(u - idx)
    k = k / k.sum()
    rows.append(np.tensordot(k, padded[idx - 1 + pad], axes=(0, 0)))
  return np.stack(rows)


def matlab_imresize_numpy(img: np.ndarray, scale: float, antialiasing: bool = True
                          ) -> np.ndarray:
  """MATLAB ``imresize(img, scale)`` bicubic (antialiased when shrinking) of a 2-D image,
  float64 in, float64 out."""
  assert antialiasing
  img = np.asarray(img, np.float64)
  return _resize_axis(_resize_axis(img, scale).T, scale).T


def load_basicsr_niqe():
  """``(niqe_fn, params)``: BasicSR's ``niqe(img, mu, cov, window)`` and its
  ``niqe_pris_params.npz`` (dict of arrays), or None when BasicSR is not installed."""
  folder = basicsr_metrics_dir()
  if folder is None:
    return None
  stubs = {
      "cv2": types.ModuleType("cv2"),
      "basicsr": types.ModuleType("basicsr"),
      "basicsr.metrics": types.ModuleType("basicsr.metrics"),
      "basicsr.metrics.metric_util": types.ModuleType("basicsr.metrics.metric_util"),
      "basicsr.utils": types.ModuleType("basicsr.utils"),
      "basicsr.utils.matlab_functions": types.ModuleType("basicsr.utils.matlab_functions"),
      "basicsr.utils.registry": types.ModuleType("basicsr.utils.registry"),
  }
  stubs["basicsr.metrics.metric_util"].reorder_image = None
  stubs["basicsr.metrics.metric_util"].to_y_channel = None
  stubs["basicsr.utils.matlab_functions"].imresize = (
      lambda img, scale, antialiasing=True: matlab_imresize_numpy(img, scale, antialiasing
                                                                  ).astype(np.float32))
  registry = types.SimpleNamespace(register=lambda *a, **k: (lambda f: f))
  stubs["basicsr.utils.registry"].METRIC_REGISTRY = registry
  saved = {name: sys.modules.get(name) for name in stubs}
  sys.modules.update(stubs)
  try:
    spec = importlib.util.spec_from_file_location("_basicsr_niqe_reference",
                                                  folder / "niqe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
  finally:
    for name, previous in saved.items():
      if previous is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = previous
  with np.load(folder / "niqe_pris_params.npz") as data:
    params = {k: data[k] for k in data.files}
  return module.niqe, params


def sample_photos() -> list[np.ndarray]:
  """The photos ``BASICSR_NIQE_OF_SAMPLES`` scores: scikit-image's bundled astronaut,
  coffee and chelsea (uint8 RGB, no download), each cropped to a 192x256 window."""
  from skimage import data

  return [data.astronaut()[100:292, 120:376], data.coffee()[60:252, 100:356],
          data.chelsea()[40:232, 80:336]]


def gaussian_window() -> np.ndarray:
  """The 7x7 Gaussian (sigma 7/6, sum 1) that BasicSR's ``niqe_pris_params.npz`` holds."""
  x = np.arange(7) - 3.0
  g = np.exp(-(x[:, None] ** 2 + x[None] ** 2) / (2 * (7 / 6) ** 2))
  return g / g.sum()


# BasicSR 1.4.2's ``niqe()`` of ``sample_photos()`` (Y of MATLAB's rgb2ycbcr, rounded) with
# fdjax's shipped pristine model (``fdjax.eval.niqe.default_model()``'s mean and
# covariance) and ``gaussian_window()``: a check of fdjax's NIQE features and distance
# that runs without BasicSR installed. Regenerate (when the shipped model changes) with
# ``pip install --no-deps basicsr==1.4.2 && python tests/niqe_reference.py``.
BASICSR_NIQE_OF_SAMPLES = (5.172526, 9.938923, 3.333616)


if __name__ == "__main__":
  from fdjax.eval.niqe import default_model

  reference = load_basicsr_niqe()
  if reference is None:
    sys.exit("BasicSR not installed: pip install --no-deps basicsr==1.4.2")
  basicsr_niqe, params = reference
  np.testing.assert_allclose(params["gaussian_window"], gaussian_window(), rtol=1e-6, atol=1e-9)
  model = default_model()
  y = lambda rgb: np.round(16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1]
                                 + 24.966 * rgb[..., 2]) / 255)
  values = [float(basicsr_niqe(y(p.astype(np.float64)).astype(np.float32),
                               np.asarray(model.mean, np.float64),
                               np.asarray(model.cov, np.float64), gaussian_window()))
            for p in sample_photos()]
  print("BASICSR_NIQE_OF_SAMPLES = (" + ", ".join(f"{v:.6f}" for v in values) + ")")
