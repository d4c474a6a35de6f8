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


def _soup_stage(name: str, stage: str, config) -> str:
  """The fused stage that a ModelSoups model ``name`` ('modelsoups': the average BN
  variant; 'modelsoups_<variant>') is in the run of ``config``. A model without
  BatchNorm (every restoration model) has one soup for every variant, the run's
  ``fused/<fusion.init_batch_stats>`` (``stages.fusion_modes``). A BatchNorm variant the
  run's ``fusion.modelsoups_variants`` leaves out is a ``ModelNotInRunError``."""
  from fdjax.load import ModelNotInRunError

  fusion = config.get("fusion", {})
  if config.get("task", "classification") == "restoration":
    return f"fused/{fusion.get('init_batch_stats', 'average')}"
  variants = parse_list(fusion.get("modelsoups_variants", ""))
  variant = stage.split("/", 1)[1]
  if variants and variant not in variants:
    raise ModelNotInRunError(
        f"ModelSoups' BatchNorm variant {variant!r} ({name!r}) is not one the run built: "
        f"its fusion.modelsoups_variants is {', '.join(variants)}",
        hint=f"load one of {', '.join('modelsoups_' + v for v in variants)}")
  return stage


METHOD = Method(
    "modelsoups", requires=lambda ctx: tuple(f"fused/{v}" for v in _variants(ctx)),
    rows=_rows,
    models={"modelsoups": Loadable("fused/average", locate=_soup_stage),
            **{f"modelsoups_{m}": Loadable(f"fused/{m}", locate=_soup_stage) for m in BN_MODES}})
