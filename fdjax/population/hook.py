"""The evolutionary epoch as ``fit``'s epoch hook, and the per-epoch Pareto record.

``evolution_hook(score, cfg, objectives)`` returns ``on_epoch_end(state, epoch)`` for
``fdjax.train.fit`` (``-> (state, metrics)`` after an evolutionary epoch, ``{}`` after
the Adam epochs between them): after every ``evolve_every``-th Adam epoch
(default every one; the official code: 10), one ``evolutionary_epoch`` of ``generations``
generations (default 1; the official code: 200) on the ``PopulationState`` (its
evolution key is in the state, so a resumed run evolves exactly as an uninterrupted
one), the new state placed like the old one, and the
Pareto report of the members' metrics (``score`` negated back when it minimises a
higher-is-better metric) as metrics for ``metrics.jsonl``; with ``report_path`` the
latest report is also written there as JSON; ``ref``: the hypervolume's reference point
(``fdjax.population.pareto.hypervolume``; default 0).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np

from fdjax.distributed import write_once
from fdjax.json_files import write_json
from fdjax.population.evolution import EvolutionConfig, evolutionary_epoch
from fdjax.population.pareto import pareto_report
from fdjax.train.mesh import place


def evolution_hook(score: Callable, cfg: EvolutionConfig, objectives: Sequence[str], *,
                   higher_is_better: bool = True, report_path: str | None = None,
                   ref: Sequence[float] | None = None, evolve_every: int = 1,
                   generations: int = 1):
  sign = -1.0 if higher_is_better else 1.0

  def on_epoch_end(state, epoch: int):
    if (epoch + 1) % evolve_every:
      return {}   # an Adam epoch with no evolutionary epoch after it: the state as it is
    new_state, info = evolutionary_epoch(state, score, cfg, generations)
    new_state = jax.tree.map(lambda new, old: place(new, old.sharding, copy=False),
                             new_state, state)
    metric = sign * np.asarray(info["fitness"])
    report = pareto_report(metric, objectives, ref=ref)
    report.update(epoch=epoch + 1, generation=int(new_state.evolution.generation),
                  replaced=np.asarray(new_state.evolution.replaced).tolist())
    if report_path is not None:
      write_once(lambda: write_json(report_path, report, indent=1), "pareto report")
    return new_state, {"member_metric": metric.tolist(),
                       "non_dominated": report["non_dominated"],
                       "hypervolume": report["hypervolume"],
                       "replaced": report["replaced"]}

  return on_epoch_end
