"""ModelSoups: the fused model itself, one row per BatchNorm variant of
``fusion.modelsoups_variants`` (the paper's row keeps the first expert's statistics)."""

from __future__ import annotations

from fdjax.config import parse_list
from fdjax.methods.base import Loadable, Method, Output
from fdjax.study.fused import BN_MODES


def _variants(config) -> list[str]:
  return parse_list(config.fusion.modelsoups_variants)


def _rows(runner) -> Output:
  out = Output()
  for bn_mode in _variants(runner.ctx.config):
    out.rows.append((f"ModelSoups (BN {bn_mode})",
                     runner.evaluate(f"modelsoups_{bn_mode}", runner.get(f"fused/{bn_mode}"))))
  return out


METHOD = Method(
    "modelsoups", requires=lambda ctx: tuple(f"fused/{v}" for v in _variants(ctx.config)),
    rows=_rows,
    models={"modelsoups": Loadable("fused/average"),
            **{f"modelsoups_{m}": Loadable(f"fused/{m}") for m in BN_MODES}})
