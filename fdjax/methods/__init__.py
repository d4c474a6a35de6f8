"""Methods: the rows of the results table, each a plug-in module (see ``base.py``).

    input              (none)                              the degraded input itself (restoration)
    oracle             clean, experts/<d>                  each expert on its own degradation
    ensemble           experts/<d>                         the task's vote over the experts
    scratch            scratch                             random init, combined degradations
    vanilla            clean -> vanilla                    clean model fine-tuned on combined
    modelsoups         experts -> fused/<bn>               one row per BatchNorm variant
    fusing             fused -> fusing                     fused model fine-tuned, task loss
    fusiondistill      fused, experts -> fusiondistill     fused model distilled from experts
    fusiondistill_moe  fused, experts -> fusiondistill_moe mixture-of-experts student, per K
    routed_experts     experts, fusiondistill_moe          the MoE router picks one expert per image
    ea_adam            clean -> ea_adam                    EA-Adam population: best member, averages
    ea_adam_fusion     ea_adam -> ea_adam_fusion           EA-Adam fusion network, dynamic and baked

That table is a summary; the facts live in each module's ``Method`` (its ``requires``
and ``stages``). Adding a method = a module with a ``Method`` and an entry below.
"""

from __future__ import annotations

from fdjax.config import parse_list
from fdjax.methods import (ea_adam, ensemble, finetune, fusiondistill, fusiondistill_moe, inputs,
                           modelsoups, oracle, routed_experts)
from fdjax.methods.base import Loadable, Method, Output
from fdjax.study.fused import BN_MODES
from fdjax.tasks import TASKS

# In the paper's row order.
METHODS: dict[str, Method] = {m.name: m for m in (
    inputs.METHOD, oracle.METHOD, ensemble.METHOD, finetune.SCRATCH, finetune.VANILLA,
    modelsoups.METHOD, finetune.FUSING, fusiondistill.METHOD, fusiondistill_moe.METHOD,
    routed_experts.METHOD, ea_adam.METHOD, ea_adam.FUSION_METHOD)}


def get(name: str) -> Method:
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; choose from {','.join(METHODS)}")
  return METHODS[name]


def parse(text: str) -> list[Method]:
  """``config.methods`` ('a,b,...') -> methods, in the given order."""
  names = parse_list(text)
  unknown = [n for n in names if n not in METHODS]
  if unknown or not names:
    raise ValueError(f"unknown method(s) {unknown} in config.methods={text!r}; "
                     f"choose from {','.join(METHODS)}")
  return [METHODS[n] for n in names]


# Rows of the results table whose label does not name their model (normalised: lower
# case, letters and digits only; a task's own row names, ``Task.row_labels``, are read
# back to these), and rows that are not one model.
ROW_MODELS = {"vanillaft": "vanilla",
              **{f"modelsoupsbn{m}": f"modelsoups_{m}" for m in BN_MODES}}
NOT_ONE_MODEL = {
    "oracle": "each task's own expert: load expert_<degradation>",
    "ensemble": "the experts together: load one of them, expert_<degradation>",
    "routedexperts": "the MoE router picks an expert per image: load fusiondistill_moe "
                     "or an expert_<degradation>",
    "input": "the degraded input itself, no model"}


def _normalised(text: str) -> str:
  return "".join(c for c in text.lower() if c.isalnum())


def model_name(text: str, k: int | None = None) -> tuple[str, int | None]:
  """``(model name, k)`` for a model name or a row of the results table, as a person
  copies it: 'fusiondistill', 'FusionDistill', 'Vanilla FT', 'All-in-one (scratch)',
  'ModelSoups (BN average)', 'FusionDistill-MoE (K=2)' (its K, unless ``k`` says
  otherwise: then a ValueError). A name it does not know is returned as it is, for
  ``loadable`` to refuse."""
  if text.lower().startswith("expert_"):   # degradation names are lower case
    return "expert_" + text[len("expert_"):].lower(), k
  base, _, rest = text.partition("(K=")
  if rest and rest.rstrip(") ").isdigit():
    row_k = int(rest.rstrip(") "))
    if k is not None and k != row_k:
      raise ValueError(f"row {text!r} is K={row_k} but k={k} was asked for")
    text, k = base.strip(), row_k
  key = _normalised(text)
  renamed = {_normalised(new): _normalised(old)
             for task in TASKS.values() for old, new in task.row_labels.items()}
  key = renamed.get(key, key)
  if key in NOT_ONE_MODEL:
    raise ValueError(f"no single model for row {text!r}: {NOT_ONE_MODEL[key]}")
  names = {_normalised(n): n for m in METHODS.values() for n in m.models}
  rows = {_normalised(row): n for m in METHODS.values() for row, n in m.row_names.items()}
  return names.get(key) or ROW_MODELS.get(key) or rows.get(key) or text, k


def loadables() -> dict[str, Loadable]:
  """Every static model name a finished run can be loaded by (``Method.models``), but
  the experts' ('expert_<degradation>')."""
  return {k: v for m in METHODS.values() for k, v in m.models.items()}


def loadable(name: str) -> Loadable:
  """How ``fdjax.load_model`` finds model ``name`` ('expert_<degradation>' included)."""
  if name.startswith("expert_"):
    if not name[len("expert_"):] or "/" in name:
      raise ValueError(f"{name!r} names no degradation: expert_<degradation>, e.g. expert_rain")
    return Loadable(f"experts/{name[len('expert_'):]}")
  table = loadables()
  refused = {k: why for m in METHODS.values() for k, why in m.refused.items()}
  if name in refused:
    raise ValueError(f"no single model for method {name!r}: {refused[name]}")
  if name not in table:
    raise ValueError(f"no single model for method {name!r}; choose from "
                     f"{sorted(table) + ['expert_<degradation>']}")
  return table[name]


__all__ = ["METHODS", "Loadable", "Method", "Output", "get", "loadable", "loadables", "model_name",
           "parse"]
