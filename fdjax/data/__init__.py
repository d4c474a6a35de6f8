"""Data: loading image sets into host memory, batching, augmentation.

* ``ImageSet``: one split, named arrays of leading length N ('image' uint8
  [N, H, W, 3] 0..255, 'label' int32 [N], 'target' uint8 [N, H, W, 3]); ``take`` /
  ``repeat`` index or tile every field; ``Dataset`` (``fdjax.data.splits``);
* ``load(source, ...) -> Dataset`` with sources 'digits[:<size>]', 'folder:<dir or .tar.gz>'
  and 'tfds:<name>' (``fdjax.data.sources``);
* ``training_data`` / ``training_size``: what a stage with shares trains on
  (``fdjax.data.share_pools``: one pool per share, its own permutation, and its own
  degradation's real pairs when there are any);
* ``train_batches`` / ``eval_batches`` / ``num_batches`` / ``epoch_order``
  (``fdjax.data.batching``);
* ``random_flip`` / ``random_crop`` / ``cutout`` on device (``fdjax.data.augment``).
"""

from fdjax.data.augment import cutout, random_crop, random_flip
from fdjax.data.batching import epoch_order, eval_batches, num_batches, train_batches
from fdjax.data.share_pools import ShareSplits, training_data, training_size
from fdjax.data.sources import SCHEMES, load
from fdjax.data.splits import Dataset, ImageSet, repeat, take

__all__ = [
    "SCHEMES", "Dataset", "ImageSet", "ShareSplits", "load", "repeat", "take",
    "training_data", "training_size",
    "epoch_order", "eval_batches", "num_batches", "train_batches",
    "cutout", "random_crop", "random_flip",
]
