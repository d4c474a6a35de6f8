"""Test sets for whole-image evaluation: images of several sizes, synthetic or real.

A ``TestSet`` is one benchmark split (e.g. CBSD68, Rain100L) held as ``groups``, one
``ImageSet`` per image size (``PairedImages.by_size``), so every batch has one static
shape and the restoration task pads it to the network's stride:

* synthetic (``real=False``): clean images in 'image' (uint8 ``[n, H, W, 3]``, 0..255);
  the evaluation degrades them on device at each evaluation level with fixed keys;
* real (``real=True``): 'image' holds the real degraded input and 'target' the clean
  image (e.g. Rain100L's rainy / norain pairs); no degradation is applied.

A set holding one-channel reference files (Set14's ``img_003``) also has the field
'grey' (bool ``[n]``, ``PairedImages.grey``), by which scoring on Y takes them on their
grey values (``fdjax.eval.image_quality``).

A classification test split is one synthetic group (``TestSet.of_split``).
"""

from __future__ import annotations

import dataclasses
import hashlib


from fdjax.data.splits import ImageSet, update_digest


@dataclasses.dataclass(frozen=True, eq=False)
class TestSet:
  """name: the benchmark's name; groups: one ``ImageSet`` per size; names: image names
  in group order (empty for classification splits); real: see the module docstring."""

  __test__ = False  # not a pytest test class

  name: str
  groups: tuple[ImageSet, ...]
  names: tuple[str, ...] = ()
  real: bool = False

  def __len__(self) -> int:
    return sum(len(g) for g in self.groups)

  @property
  def kind(self) -> str:
    """'real' (paired benchmark inputs) or 'synthetic' (degraded on device)."""
    return "real" if self.real else "synthetic"

  @classmethod
  def of_split(cls, name: str, split: ImageSet) -> "TestSet":
    return cls(name, (split,))

  @classmethod
  def of_images(cls, images) -> "TestSet":
    """From a ``fdjax.data.paired.PairedImages``: grouped by size, real when paired."""
    groups = images.by_size()
    names = tuple(images.names[i] for idx, _ in groups for i in idx)
    return cls(images.name, tuple(g for _, g in groups), names, images.paired)

  def describe(self) -> str:
    """``'cbsd68 (synthetic, 68 images, 2 sizes)'``."""
    return f"{self.name} ({self.kind}, {len(self)} images, {len(self.groups)} size(s))"

  def digest(self) -> str:
    """sha256 (16 hex digits) of the images' names and every field's bytes: a set
    replaced by other images of the same name, count and sizes differs."""
    h = hashlib.sha256("\n".join(self.names).encode())
    for group in self.groups:
      update_digest(h, group.fields)
    return h.hexdigest()[:16]

  def sizes(self) -> list[tuple[int, int]]:
    return [tuple(int(d) for d in g.images.shape[1:3]) for g in self.groups]

  def first(self, n: int | None) -> "TestSet":
    """At most ``n`` images (all when None), the first ones in group order."""
    if n is None or n >= len(self):
      return self
    groups, names, left = [], [], n
    for group in self.groups:
      if left <= 0:
        break
      take = min(left, len(group))
      groups.append(ImageSet.from_fields({k: v[:take] for k, v in group.fields.items()}))
      left -= take
    names = list(self.names[:n])
    return TestSet(self.name, tuple(groups), tuple(names), self.real)

