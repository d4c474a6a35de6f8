"""``StackedModel``: P members of one architecture as one module-like object.

``init`` returns variables stacked on axis 0 (so that the engine's variable templates,
``save_variables``/``load_variables`` and ``train_stage`` handle a population as one
model) and ``apply(variables, x, train=False)`` returns every member's ``(outputs,
features)`` stacked ``[P, ...]`` on the same input.
"""

from __future__ import annotations

import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class StackedModel:
  """``member``: the Flax module of one member; ``size``: P."""

  member: object
  size: int

  def init(self, key, x, train: bool = False):
    return jax.vmap(lambda k: self.member.init(k, x, train=train))(jax.random.split(key, self.size))

  def apply(self, variables, x, train: bool = False, **kwargs):
    return jax.vmap(lambda v: self.member.apply(v, x, train=train, **kwargs))(variables)
