"""``tfds:<name>``: a prepared TensorFlow Datasets image-classification data set.

Works for any builder with an ``image`` feature (uint8, 1, 3 or 4 channels, one size)
and a ``label`` ``ClassLabel`` feature (cifar10, cifar100, mnist, ...). Splits used:
``train``, ``test`` and, when present, ``validation``. Grey images are replicated to 3
channels; an alpha channel is dropped. Nothing is downloaded: the data set must
already be prepared in ``data_dir`` (default: TFDS's own, ``$TFDS_DATA_DIR`` or
``~/tensorflow_datasets``). Data sets stored as ``array_record`` are read without
TensorFlow; ``tfrecord`` ones need ``tensorflow`` installed.
"""

from __future__ import annotations

import numpy as np

from fdjax.data.splits import RawSource, in_memory_source
from fdjax.errors import DataError, MissingDataError

_READ_CHUNK = 2048


def to_rgb_uint8(images: np.ndarray, what: str) -> np.ndarray:
  """uint8 ``[N, H, W]`` or ``[N, H, W, 1|3|4]`` -> uint8 ``[N, H, W, 3]``."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise DataError(f"{what}: images must be uint8, got {images.dtype}")
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise DataError(f"{what}: expected images [N, H, W, 1|3|4], got shape {images.shape}")
  if images.shape[-1] == 1:
    return np.repeat(images, 3, axis=-1)
  return np.ascontiguousarray(images[..., :3])


def _read_split(builder, split: str, what: str) -> tuple[np.ndarray, np.ndarray]:
  import tensorflow_datasets as tfds
  if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
    ds = builder.as_data_source(split)
    images, labels = [], []
    for start in range(0, len(ds), _READ_CHUNK):
      for ex in ds.__getitems__(list(range(start, min(start + _READ_CHUNK, len(ds))))):
        images.append(ex["image"])
        labels.append(ex["label"])
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
      raise DataError(f"{what} split {split!r}: images have different shapes {sorted(shapes)[:4]}")
    return np.stack(images), np.asarray(labels, np.int32)
  try:
    import tensorflow  # noqa: F401  (tfrecord files can only be read through TensorFlow)
  except ImportError:
    raise ImportError(
        f"{what} is stored as {builder.info.file_format.value} in {builder.data_dir}, which "
        f"needs tensorflow to read: pip install tensorflow, or prepare it with "
        f"file_format='array_record', or use a folder:<path> image-folder source") from None
  arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
  return np.asarray(arrays["image"]), np.asarray(arrays["label"], np.int32)


def source(name: str, *, data_dir: str | None = None) -> RawSource:
  """Opens prepared TFDS data set ``name`` (optionally ``name/config:version``)."""
  import tensorflow_datasets as tfds
  what = f"TFDS data set {name!r}"
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError as e:
    raise DataError(f"unknown {what} (data_dir={data_dir!r}): {e}") from None
  if not builder.is_prepared():
    raise MissingDataError(
        f"{what} is not prepared in data_dir={data_dir or '(TFDS default)'} (looked in "
        f"{builder.data_dir}); this machine cannot download it. Prepare it elsewhere and copy "
        f"it there, set --config.data.data_dir=<folder>, or use an image folder or archive with "
        f"source='folder:<path>' (layout split/<class>/<image>)")
  features = builder.info.features
  if "image" not in features or "label" not in features or not hasattr(features["label"], "names"):
    raise DataError(f"{what} is not an image-classification data set with 'image' and 'label' "
                     f"(ClassLabel) features; it has {sorted(features.keys())}")
  available = sorted(builder.info.splits.keys())
  for split in ("train", "test"):
    if split not in available:
      raise DataError(f"{what} in {builder.data_dir} has no {split!r} split; available "
                       f"splits: {available}")
  splits = {}
  for split in ("train", "test", "validation"):
    if split in available:
      images, labels = _read_split(builder, split, what)
      splits[split] = (to_rgb_uint8(images, f"{what} split {split!r}"), labels)
  return in_memory_source(name.split("/")[0].split(":")[0], features["label"].names, splits)
