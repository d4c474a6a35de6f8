"""JPEG round trip in jax.numpy against PIL (libjpeg-turbo), the paper's reference codec.

Targets at every quality: mean abs diff <= 1.0 and PSNR >= 40 dB against PIL's decoded
output (the 'exact' path is in fact bit-exact with it). All calls go through jax.jit
with a few fixed shapes so that the whole file compiles only a handful of programs.
"""

import io
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fdjax.degradations import jpeg as jpeg_lib
from fdjax.degradations.jpeg_parity import load_cifar_test, pil_jpeg

CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
QUALITIES = (1, 5, 10, 25, 50, 75, 90, 95, 100)
BATCH = 60  # one batch size everywhere: one compilation per mode

_exact = jax.jit(jpeg_lib.jpeg_float)
_registry = jax.jit(jpeg_lib.jpeg)


def synthetic_images(n: int = BATCH, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
  """uint8 [n,h,w,3]: smooth colour ramps and blobs, sinusoidal texture, edges, noise."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[:h, :w].astype(np.float32)
  out = []
  for i in range(n):
    phase = rng.uniform(0, 2 * np.pi, 3)
    ramp = np.stack([255 * (xx / w * np.cos(p) + yy / h * np.sin(p)) % 256 for p in phase], -1)
    blob = 255 * np.exp(-((xx - rng.uniform(0, w)) ** 2 + (yy - rng.uniform(0, h)) ** 2) / 60)
    period = rng.uniform(2, 8)
    texture = 60 * np.sin(2 * np.pi * (xx * np.cos(phase[0]) + yy * np.sin(phase[0])) / period)
    img = 0.6 * ramp + 0.4 * blob[..., None] + texture[..., None] * rng.uniform(0, 1, 3)
    img += rng.normal(0, (i % 4) * 6, img.shape)  # from none to strong noise
    if i % 5 == 0:
      img[:, w // 2:] = 255 * (i % 2)  # hard edge into saturated white or black
    out.append(np.clip(img, 0, 255))
  return np.round(np.stack(out)).astype(np.uint8)


def parity(ours, ref):
  """(mean abs diff, PSNR dB, max abs diff) of two 0..255 arrays."""
  diff = np.asarray(ours, np.float64) - np.asarray(ref, np.float64)
  mse = np.mean(diff**2)
  psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
  return np.mean(np.abs(diff)), psnr, np.max(np.abs(diff))


def assert_parity(images: np.ndarray, qualities=QUALITIES):
  for q in qualities:
    ours = _exact(images.astype(np.float32), np.full(len(images), q, np.float32))
    mad, psnr, mx = parity(ours, pil_jpeg(images, q))
    assert mad <= 1.0 and psnr >= 40.0, f"q={q}: mad={mad:.3f} psnr={psnr:.2f} max={mx}"


@pytest.fixture(scope="module")
def synthetic():
  return synthetic_images()


@pytest.fixture(scope="module")
def cifar():
  if not CIFAR.exists():
    pytest.skip(f"{CIFAR} not present")
  return load_cifar_test(str(CIFAR), BATCH)


def test_parity_synthetic(synthetic):
  assert_parity(synthetic)


def test_parity_cifar(cifar):
  assert cifar.shape == (BATCH, 32, 32, 3)
  assert_parity(cifar)


@pytest.mark.parametrize("shape", [(20, 28), (27, 35)])
def test_parity_sizes_not_multiple_of_16(shape):
  """Edge replication to whole MCUs, cropped back; odd sizes too (chroma rounding up)."""
  images = synthetic_images(6, *shape, seed=1)
  for q in (5, 50, 95):
    out = _registry(jax.random.key(0), images, jnp.full(6, q, jnp.float32))
    assert out.dtype == jnp.uint8 and out.shape == images.shape
    mad, psnr, mx = parity(out, pil_jpeg(images, q))
    assert mad <= 1.0 and psnr >= 40.0, f"{shape} q={q}: mad={mad:.3f} psnr={psnr:.2f} max={mx}"


@pytest.mark.parametrize("shape", [(32, 1), (16, 2), (32, 3), (32, 4), (2, 3), (32, 5), (3, 32)])
def test_narrow_images_match_pil_exactly(shape):
  """Images at most 4 pixels wide: libjpeg replicates chroma 2x2 instead of its fancy
  (triangular) upsampling when the chroma plane is at most 2 samples wide."""
  images = synthetic_images(4, *shape, seed=2)
  for q in (10, 75, 95):
    out = _registry(jax.random.key(0), images, jnp.full(4, q, jnp.float32))
    np.testing.assert_array_equal(np.asarray(out), pil_jpeg(images, q), err_msg=f"{shape} q={q}")


def test_quality_tables_match_pil():
  img = synthetic_images(1)[0]
  qualities = (1, 3, 10, 25, 49, 50, 51, 75, 95, 100)
  luma, chroma = jpeg_lib.quantization_tables(jnp.asarray(qualities))
  for i, q in enumerate(qualities):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=q)
    buf.seek(0)
    tables = Image.open(buf).quantization  # natural (row-major) order in Pillow
    np.testing.assert_array_equal(np.asarray(luma[i]).ravel(), tables[0], err_msg=f"q={q}")
    np.testing.assert_array_equal(np.asarray(chroma[i]).ravel(), tables[1], err_msg=f"q={q}")


def test_clean_quality_is_bitwise_noop(synthetic):
  x = synthetic.astype(np.float32) + np.random.default_rng(0).uniform(-0.5, 0.5, synthetic.shape)
  x = x.astype(np.float32)
  q = np.where(np.arange(BATCH) % 2 == 0, 101.0, 50.0).astype(np.float32)
  out = np.asarray(_exact(x, q))
  assert out.dtype == np.float32 and out.shape == x.shape
  np.testing.assert_array_equal(out[0::2], x[0::2])
  assert not np.array_equal(out[1::2], x[1::2])
  clean = _registry(jax.random.key(1), synthetic, jnp.full(BATCH, 101.0))
  assert clean.dtype == jnp.uint8
  np.testing.assert_array_equal(np.asarray(clean), synthetic)


def test_per_image_quality_and_vmap(synthetic):
  x = synthetic.astype(np.float32)
  qs = np.array([1, 7, 33, 50, 75, 90, 100, 101] * BATCH, np.float32)[:BATCH]
  mixed = np.asarray(_exact(x, qs))
  for q in np.unique(qs):  # each image as if the whole batch had its quality
    rows = qs == q
    uniform = np.asarray(_exact(x, np.full(BATCH, q, np.float32)))
    np.testing.assert_array_equal(mixed[rows], uniform[rows], err_msg=f"q={q}")
  one_by_one = jax.jit(jax.vmap(lambda img, q: jpeg_lib.jpeg_float(img[None], q[None])[0]))
  np.testing.assert_array_equal(np.asarray(one_by_one(x, qs)), mixed)


def _value_and_grad(rounding):
  def loss(x, q):
    out = jpeg_lib.jpeg_float(x, q, rounding=rounding)
    return out.sum(), out
  return jax.jit(jax.value_and_grad(loss, has_aux=True))


def test_straight_through(synthetic):
  x = synthetic.astype(np.float32)
  q = np.array([10, 50, 90, 101] * BATCH, np.float32)[:BATCH]
  (_, out), grad = _value_and_grad("straight_through")(x, q)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(_exact(x, q)))
  grad = np.asarray(grad)
  assert np.all(np.isfinite(grad)) and np.abs(grad).mean() > 0.1
  np.testing.assert_array_equal(grad[q == 101], 1.0)  # clean images: identity
  assert np.all(np.abs(grad[q != 101]).reshape(-1, 32 * 32 * 3).max(1) > 0)


def test_smooth(synthetic):
  x = synthetic.astype(np.float32)
  q = np.array([10, 50, 90, 101] * BATCH, np.float32)[:BATCH]
  (_, out), grad = _value_and_grad("smooth")(x, q)
  grad = np.asarray(grad)
  assert np.all(np.isfinite(grad))
  assert np.all(np.abs(grad[q != 101]).reshape(-1, 32 * 32 * 3).mean(1) > 1e-3)
  # A differentiable approximation, not a different codec: close to the exact output.
  mad, psnr, _ = parity(out, _exact(x, q))
  assert mad < 3.0 and psnr > 28.0, (mad, psnr)


def test_bad_rounding_mode():
  with pytest.raises(ValueError):
    jpeg_lib.jpeg_float(np.zeros((1, 16, 16, 3), np.float32), np.array([50.0]), rounding="floor")
