"""MoE student variables from the fused and per-degradation models; expert-parallel shardings.

``moe_variables`` builds the student of FusionDistill's MoE variant: every part that
the dense CifarResNet also has (stem, unrouted stages, classifier) comes from the
fused model; the routed stage's expert copy i comes from per-degradation model i
(params and BatchNorm statistics, stacked on a new leading axis); with channel
sharing the shared branch is the fused model's stage; router, prompts and
channel gates are freshly initialised.

``expert_sharding`` shards the leading (expert) axis of every stacked expert leaf over
the mesh axis ``'expert'`` and replicates everything else; it works on variables,
on parameter trees, on optimiser states and on whole ``TrainState``s (any pytree
whose dict path goes through ``stage{s}_moe/experts``).

Observed with jax/jaxlib 0.10.2 (CPU, 8 simulated devices, mesh ``(data 2, expert 4)``):

* experts sharded over ``'expert'``: forward and gradients equal the unsharded ones,
  but XLA's partitioner all-gathers the expert kernels of the grouped convolutions
  (the vmapped convs after each block's first) instead of running each expert on
  its own device: storage is expert-parallel, part of the compute is not.
* params *replicated* on that 2-D mesh with the batch over ``'data'`` only: the
  experts' grouped-conv kernel gradients come out WRONG. So
  ``fdjax.train.make_train_step`` refuses a mesh with an axis besides ``'data'``
  unless given ``state_sharding=expert_sharding(mesh, state)`` (the state put that
  way), and the 1-D ``make_mesh`` data mesh is correct as well.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fdjax.train.mesh import two_axis_mesh
from fdjax.train.state import init_variables
from fdjax.trees import stack_trees

EXPERT_AXIS = "expert"
COLLECTIONS = ("params", "batch_stats")
_COPIED = ("experts", "shared")   # parts of a ``stage{s}_moe`` that come from trained models


def _stage_blocks(tree: dict, stage: str) -> dict:
  """``{'block{b}': tree['{stage}_block{b}']}`` from a CifarResNet collection."""
  prefix = f"{stage}_block"
  blocks = {f"block{name[len(prefix):]}": sub for name, sub in tree.items()
            if name.startswith(prefix)}
  if not blocks:
    raise ValueError(f"no '{prefix}*' entries in variables (keys: {sorted(tree)})")
  return blocks


def moe_variables(moe_model, fused_variables: dict, expert_variables_list: Sequence[dict],
                  key: jax.Array, image_shape: tuple[int, int, int],
                  blocks_of: Callable[[dict, str], dict] | None = None) -> dict:
  """Variables for ``moe_model`` (a ``MoEResNet``) from CifarResNet variables of the same depth.

  Every other MoE student whose routed parts are named ``<part>_moe`` (with ``experts``,
  optionally ``shared``) works the same way given ``blocks_of(dense collection, part)``:
  the dense variables of ``<part>`` (default: the CifarResNet stage's
  ``{'block<b>': ...}``; the U-Net student, ``fdjax.moe.unet_student``, passes
  ``lambda tree, part: tree[part]``).

  Args:
    moe_model: the student, ``moe_resnet(depth, ...)``.
    fused_variables: ``{'params', 'batch_stats'}`` of the fused dense model.
    expert_variables_list: ``num_experts`` variables of the per-degradation models,
      in expert order (expert i of every routed stage comes from entry i).
    key: PRNG key for the fresh router / prompts / channel-gate parameters (they are
      drawn as ``moe_model.init(key, ...)`` draws them).
    image_shape: ``(H, W, C)`` of the inputs.
  Returns ``{'params', 'batch_stats'}``; raises ``ValueError`` on any shape mismatch.
  """
  if len(expert_variables_list) != moe_model.num_experts:
    raise ValueError(f"need {moe_model.num_experts} expert variables, "
                     f"got {len(expert_variables_list)}")
  image_shape = tuple(image_shape)
  blocks_of = blocks_of or _stage_blocks
  shapes = jax.eval_shape(lambda k: init_variables(moe_model, k, image_shape), key)

  def fresh_parts(k):   # only what is not copied: XLA drops the rest of the initialisation
    variables = init_variables(moe_model, k, image_shape)
    return {c: {name: {part: sub for part, sub in tree.items() if part not in _COPIED}
                for name, tree in variables[c].items() if name.endswith("_moe")}
            for c in COLLECTIONS}

  fresh = jax.jit(fresh_parts)(key)
  out = {}
  for collection in COLLECTIONS:
    fused = fused_variables.get(collection, {})
    built = {}
    for name, sub in shapes[collection].items():
      if not name.endswith("_moe"):
        if name not in fused:
          raise ValueError(f"fused variables lack {collection}/{name}")
        built[name] = fused[name]
        continue
      stage = name[:-len("_moe")]
      moe = dict(fresh[collection][name])   # router / channel_gate
      experts = [blocks_of(ev.get(collection, {}), stage) for ev in expert_variables_list]
      moe["experts"] = stack_trees(experts)
      if "shared" in sub:
        moe["shared"] = blocks_of(fused, stage)
      built[name] = moe
    _check_shapes(shapes[collection], built, collection)
    out[collection] = built
  return out


def _check_shapes(expected, got, collection):
  if jax.tree.structure(expected) != jax.tree.structure(got):
    raise ValueError(f"{collection} tree structure does not match the MoE model's "
                     f"(different depth / head / classes?)")
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(got)):
    if a.shape != b.shape:
      raise ValueError(f"{collection}{jax.tree_util.keystr(path)}: MoE model expects "
                       f"{a.shape}, got {b.shape}")


def is_expert_leaf(path) -> bool:
  """True for a leaf under ``.../stage{s}_moe/experts/...`` (leading axis = expert)."""
  keys = [getattr(k, "key", None) for k in path]
  return any(a is not None and str(a).endswith("_moe") and b == "experts"
             for a, b in zip(keys, keys[1:]))


def expert_sharding(mesh: Mesh, tree, expert_axis: str = EXPERT_AXIS):
  """A ``NamedSharding`` pytree for ``tree``: stacked expert leaves ``P(expert_axis)`` on their
  leading axis, every other leaf replicated ``P()``.

  The number of experts must be divisible by ``mesh.shape[expert_axis]``.
  """
  size = mesh.shape[expert_axis]

  def spec(path, leaf):
    if is_expert_leaf(path) and np.ndim(leaf) >= 1:
      if np.shape(leaf)[0] % size:
        raise ValueError(f"{jax.tree_util.keystr(path)}: {np.shape(leaf)[0]} experts do not "
                         f"split over mesh axis '{expert_axis}' of size {size}")
      return NamedSharding(mesh, P(expert_axis))
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(spec, tree)


def expert_mesh(num_expert_shards: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 2-D mesh ``(data, expert)`` of shape ``(n / num_expert_shards, num_expert_shards)``.

  Batches split over ``'data'`` (``fdjax.train.data_sharding`` works unchanged), stacked
  experts over ``'expert'``.
  """
  return two_axis_mesh(EXPERT_AXIS, num_expert_shards, devices)
