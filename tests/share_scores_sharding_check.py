"""Run with 8 simulated CPU devices (see test_validation_by_share.py): validation per
share over a mesh of 8 equals numpy's PSNR of each share's images."""

import os
import sys

assert "xla_force_host_platform_device_count=8" in os.environ.get("XLA_FLAGS", "")
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from fdjax.data import ImageSet  # noqa: E402
from fdjax.eval.metric import jit_clean, split_scores_by_share  # noqa: E402
from fdjax.train import make_mesh  # noqa: E402
from test_validation_by_share import SHIFT, TASK, brighten_by_share, numpy_psnr, predict  # noqa: E402

assert jax.device_count() == 8, jax.devices()
mesh = make_mesh()
clean = np.random.default_rng(0).integers(0, 200, (30, 12, 13, 3), dtype=np.uint8)
split = ImageSet.from_fields({"image": clean, "target": clean})
overall, per_share = split_scores_by_share(TASK, jit_clean(predict, mesh), {}, split, shares=3,
                                           batch_size=24, mesh=mesh,
                                           transform=brighten_by_share, metrics=("psnr",))
share = np.arange(30) % 24 // 8   # batches of 24 over 8 devices, shares of 8 images
psnr = numpy_psnr(np.clip(clean.astype(int) + np.array(SHIFT)[share, None, None, None], 0, 255),
                  clean)
np.testing.assert_allclose(overall["psnr"], psnr.mean(), rtol=1e-5)
np.testing.assert_allclose([s["psnr"] for s in per_share],
                           [psnr[share == i].mean() for i in range(3)], rtol=1e-5)
print("OK shares over 8 devices")
