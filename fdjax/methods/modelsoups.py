"""ModelSoups: the fused model itself, one row per BatchNorm variant of
``fusion.modelsoups_variants`` (the paper's row keeps the first expert's statistics);
for a model without BatchNorm, one row 'ModelSoups' (``stages.fusion_modes``)."""

from __future__ import annotations

from fdjax.config import parse_list
from fdjax.methods.base import Loadable, Method, Output, one_model
from fdjax.study.fused import BN_MODES
from fdjax.study.stages import fusion_modes, has_batch_stats


def _variants(ctx) -> list[str]:
  return fusion_modes(ctx, parse_list(ctx.config.fusion.modelsoups_variants))


def _rows(runner) -> Output:
  out = Output()
  batch_norm = has_batch_stats(runner.ctx)
  for bn_mode in _variants(runner.ctx):
    label = f"ModelSoups (BN {bn_mode})" if batch_norm else "ModelSoups"
    variables = runner.get(f"fused/{bn_mode}")
    out.rows.append((label, runner.evaluate(f"modelsoups_{bn_mode}", variables)))
    out.models[label] = one_model(variables)
  return out


METHOD = Method(
    "modelsoups", requires=lambda ctx: tuple(f"fused/{v}" for v in _variants(ctx)),
    rows=_rows,
    models={"modelsoups": Loadable("fused/average"),
            **{f"modelsoups_{m}": Loadable(f"fused/{m}") for m in BN_MODES}})
