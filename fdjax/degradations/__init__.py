"""Image degradations: the paper's four (JPEG, blur, AWGN, SAPN) and six restoration ones.

Every degradation maps uint8 ``[B, H, W, 3]`` images (0..255) and one level per image
(float ``[B]``, in the degradation's own units) to uint8 images, under jit and vmap::

    degraded = apply("blur", key, images, levels)        # sigma in pixels
    levels = sample_levels("awgn", key, batch)           # uniform over the grid
    x = apply_float("haze", key, images_0_1, levels)     # float 0..1 in and out

Grids and units (``levels(name)``, ``clean_level(name)``):

| name | level | grid | clean |
|---|---|---|---|
| jpeg | quality Q (reported as 100 - Q) | 1..101 step 1 | 101 |
| blur | Gaussian sigma, pixels | 0..5 step 0.1 | 0 |
| awgn | noise sigma, 0..255 units | 0..50 step 1 | 0 |
| sapn | salt-and-pepper density | 0..0.25 step 0.01 | 0 |
| sapn_paper | as sapn, salt = 1 (the reference's bug) | 0..0.25 step 0.01 | 0 |
| denoise | noise sigma, 0..255 units (float noise, then uint8) | 0..55 step 1 | 0 |
| haze | scattering coefficient beta | 0..3 step 0.1 | 0 |
| rain | streak seed density | 0..0.05 step 0.005 | 0 |
| lowlight | darkening factor | 0..0.9 step 0.05 | 0 |
| motion_blur | kernel length, pixels | 0..15 step 1 | 0 |
| sr | scale s: MATLAB bicubic down by s, back up | 1..4 step 1 | 1 |
"""

from fdjax.degradations.compose import apply_sequence, compose
from fdjax.degradations.plan import LevelPlan
from fdjax.degradations.registry import (NAMES, REGISTRY, RESTORATION_NAMES, Degradation, apply,
                                         apply_float, clean_level, get, levels,
                                         normalised_level, sample_levels)

__all__ = [
    "LevelPlan", "NAMES", "REGISTRY", "RESTORATION_NAMES", "Degradation", "apply", "apply_float",
    "apply_sequence", "clean_level", "compose", "get", "levels", "normalised_level",
    "sample_levels",
]
