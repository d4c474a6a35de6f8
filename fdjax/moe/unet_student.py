"""The restoration MoE student of FusionDistill-MoE: a U-Net (``fdjax.models.unet``)
whose blocks at the routed levels are mixtures of E copies of that block.

Every block of a routed level (``routed``: ``'encoder<l>'``, ``'middle'``,
``'decoder<l>'``) named ``<name>`` in the dense U-Net becomes ``<name>_moe``::

    <name>_moe/router/...          PromptRouter (MEASNet's task prompts), fresh
    <name>_moe/experts/...         the dense block's variables, leaves [E, ...]: copy i
                                   from per-task expert U-Net i (``unet_moe_variables``)
    <name>_moe/shared/...          channel_sharing only: the fused model's block
    <name>_moe/channel_gate/...    channel_sharing only (MUIRF CPSM)

and computes ``sum_e gates[..., e] * block_e(x)`` with top-K gates per pixel
(``routing='pixel'``, ``[B, h, w, E]`` at the block's resolution) or per image
(``[B, E]``), from ``fdjax.moe.routing.route`` (softmax, top-K, CV^2 balance loss).
Everything else (intro, down/up-samplings, unrouted blocks, ending) is the fused
model's. All E copies run on the whole input (dense dispatch; unrolled on CPU, vmapped
elsewhere: ``fdjax.moe.experts.run_copies``).

With every routed gate one-hot on expert i, and the unrouted parts equal to expert i's,
the student computes exactly expert i's U-Net. The variables do not depend on ``k``:
one trained student is evaluated at every K with ``model.clone(k=K)``.

Apply returns ``(image float32 [B, H, W, 3], features)``: the dense U-Net's features
plus those of ``fdjax.moe.routing.routing_features`` (``router`` / ``router_logits`` of
the finest routed block, ``router_<name>`` and ``router_logits_<name>`` for each routed
block ``<name>``, ``aux_loss`` the unweighted sum of the balance losses,
``channel_gate_<name>``), so ``fusiondistill_loss(...,
aux_loss_weight=lambda)`` and ``fdjax.moe.usage`` (fraction of pixels per expert) work
unchanged.
"""

from __future__ import annotations

from typing import Literal, Sequence

import flax.linen as nn
import jax

from fdjax.config import parse_list
from fdjax.errors import ConfigError
from fdjax.eval.inference import padded_size
from fdjax.models.nafnet import naf_blocks
from fdjax.models.resnet import adaptive_avg_pool
from fdjax.models.unet import BlockFactory, UNetShape, conv_blocks, per_level, unet
from fdjax.moe.experts import ExpertLoop, run_copies
from fdjax.moe.init import moe_variables
from fdjax.moe.routing import channel_share, combine, route, routing_features

BASES = ("unet", "nafnet")
ROUTER_SOURCES = ("stage", "image")


class RoutedBlock(nn.Module):
  """E copies of one U-Net block behind a router. ``(x [B, H, W, c], router_x [B, H, W,
  C']) -> (out [B, H, W, c], {'routing', 'channel_gate'})``."""

  make: BlockFactory
  channels: int
  num_experts: int
  k: int
  per_pixel: bool = True
  num_prompts: int = 8
  noisy_gating: bool = False
  prompt_init_scale: float = 1.0
  channel_sharing: bool = False
  expert_loop: ExpertLoop = "auto"
  train: bool = False

  @nn.compact
  def __call__(self, x, router_x):
    r = route(self, router_x, num_experts=self.num_experts, k=self.k,
              per_pixel=self.per_pixel, num_prompts=self.num_prompts,
              noisy=self.noisy_gating, prompt_init_scale=self.prompt_init_scale,
              train=self.train)
    y = run_copies(self.make(self.channels, "experts"), self.num_experts, x, True,
                   self.expert_loop)                                  # [E, B, H, W, c]
    out = combine(y, r.gates)
    channel_gate = None
    if self.channel_sharing:
      shared = self.make(self.channels, "shared")(x)
      out, channel_gate = channel_share(self, shared, out, router_x, self.channels)
    return out, {"routing": r, "channel_gate": channel_gate}


class RoutedUNet(UNetShape):
  """The student (module docstring).

  Attributes:
    width, depth, blocks, middle_blocks, decoder_blocks, dtype: the dense U-Net's.
    base: the dense U-Net's blocks, ``'unet'`` (ConvBlock) or ``'nafnet'`` (NAFBlock, with
      ``dw_expand``, ``ffn_expand``, ``layer_scale_init``).
    num_experts: E (one per task); k: top-K.
    routed: the routed levels (``'encoder<l>'``, ``'middle'``, ``'decoder<l>'``).
    routing: ``'pixel'`` or ``'image'``.
    router_source: what each router sees: ``'stage'`` (the block's input) or ``'image'``
      (the input image, average-pooled to the block's resolution).
    num_prompts, noisy_gating, prompt_init_scale, channel_sharing, expert_loop: as for
      the classifier student (``fdjax.moe.model``).
  """

  base: str = "unet"
  dw_expand: int = 2
  ffn_expand: int = 2
  layer_scale_init: float = 0.0
  num_experts: int = 3
  k: int = 2
  routed: Sequence[str] = ("decoder1",)
  routing: Literal["pixel", "image"] = "pixel"
  router_source: Literal["stage", "image"] = "stage"
  num_prompts: int = 8
  noisy_gating: bool = False
  prompt_init_scale: float = 1.0
  channel_sharing: bool = False
  expert_loop: ExpertLoop = "auto"

  @property
  def pools_globally(self) -> bool:
    """True: each router's prompt pools its block's features over the whole input
    (``UNetShape.pools_globally``)."""
    return True

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x float ``[B, H, W, 3]`` in 0..1 (4 channels: ``image_prior``'s cue given); returns
    ``(image float32 [B, H, W, 3], features)``."""
    enc, dec = self.levels(x, "RoutedUNet")
    validate(self, enc, dec)
    plain = (conv_blocks(self.dtype) if self.base == "unet" else
             naf_blocks(self.dw_expand, self.ffn_expand, self.layer_scale_init, self.dtype))
    image = x[..., :3]   # the RGB input (an image prior's given cue left out)

    def block(channels, name):
      if name.rsplit("_block", 1)[0] not in self.routed:
        return plain(channels, name)
      routed = RoutedBlock(plain, channels, self.num_experts, self.k,
                           self.routing == "pixel", self.num_prompts, self.noisy_gating,
                           self.prompt_init_scale, self.channel_sharing, self.expert_loop,
                           train, name=f"{name}_moe")

      def call(y):
        router_x = y if self.router_source == "stage" else adaptive_avg_pool(image,
                                                                             y.shape[1:3])
        return routed(y, router_x)

      return call

    extras: dict = {}
    out, features = unet(x, block, width=self.width, depth=self.depth, blocks=enc,
                         middle_blocks=self.middle_blocks, decoder_blocks=dec,
                         dtype=self.dtype, extras=extras, image_prior=self.image_prior)
    features.update(routing_features(extras))
    return out, features


def levels_with_blocks(depth: int, enc: Sequence[int], middle: int,
                       dec: Sequence[int]) -> list[str]:
  """The level names of a U-Net that hold at least one block."""
  names = [f"encoder{l + 1}" for l in range(depth) if enc[l]]
  names += ["middle"] if middle else []
  return names + [f"decoder{l + 1}" for l in range(depth) if dec[l]]


def validate(model: RoutedUNet, enc, dec) -> None:
  if model.base not in BASES:
    raise ValueError(f"RoutedUNet.base must be one of {BASES}, got {model.base!r}")
  if not 1 <= model.k <= model.num_experts:
    raise ValueError(f"need 1 <= k <= num_experts ({model.num_experts}), got k={model.k}")
  known = levels_with_blocks(model.depth, enc, model.middle_blocks, dec)
  if isinstance(model.routed, str) or not model.routed or not set(model.routed) <= set(known):
    raise ValueError(f"routed levels must be a non-empty subset of {known} (levels with "
                     f"blocks), got {model.routed!r}")
  if model.routing not in ("pixel", "image"):
    raise ValueError(f"routing must be 'pixel' or 'image', got {model.routing!r}")
  if model.router_source not in ROUTER_SOURCES:
    raise ValueError(f"router_source must be one of {ROUTER_SOURCES}, "
                     f"got {model.router_source!r}")


def _dense_block(tree: dict, name: str) -> dict:
  if name not in tree:
    raise ValueError(f"dense U-Net variables lack '{name}' (keys: {sorted(tree)})")
  return tree[name]


def unet_moe_variables(model: RoutedUNet, fused_variables: dict, expert_variables: Sequence[dict],
                       key: jax.Array, image_shape: tuple[int, int, int] = (0, 0, 3)) -> dict:
  """Variables of the student ``model`` from the dense U-Nets' (``UNet`` / ``NAFNet`` of
  the same shape): routed block ``<name>_moe``'s expert copy i from
  ``expert_variables[i]['params'][<name>]``, ``shared`` (channel sharing) and every
  unrouted part from ``fused_variables``; router and channel gate fresh from ``key``.
  ``image_shape`` only sizes the (abstract) initialisation: it is rounded up to the
  stride. Raises ``ValueError`` on any mismatch."""
  s = model.stride
  h, w = (max(s, padded_size(int(n), s)) for n in image_shape[:2])
  return moe_variables(model, fused_variables, expert_variables, key, (h, w, 3),
                       blocks_of=_dense_block)


def restoration_student(config, k: int) -> RoutedUNet:
  """The student of ``config.restoration`` (the dense U-Net's shape and blocks: ``model``
  'unet' or 'nafnet', its ``model_options``) and ``config.moe``: one expert per task of
  ``config.degradations``, the levels of ``moe.stages`` routed, ``moe.routing`` ('pixel'
  or 'image'), ``moe.router_input`` ('stage' or 'image'), ``num_prompts``,
  ``noisy_gating``, ``prompt_init_scale``, ``channel_sharing``, ``expert_loop``; top-``k``.
  Raises ``ConfigError`` for anything else."""
  from fdjax.tasks import restoration_options as restoration  # imports fdjax.models

  o = restoration.options(config)
  if o["model"] not in BASES:
    raise ConfigError(f"FusionDistill-MoE for restoration routes the blocks of a U-Net "
                      f"or NAFNet (not PromptIR's prompts nor MEASNet's own experts): "
                      f"restoration.model must be one of {BASES}, got {o['model']!r}")
  shape = restoration.shape_fields(o)
  cfg = config.moe
  routed = tuple(parse_list(cfg.stages))
  enc = per_level(shape["blocks"], shape["depth"], "blocks")
  dec = enc if shape["decoder_blocks"] is None else per_level(shape["decoder_blocks"],
                                                              shape["depth"], "decoder_blocks")
  known = levels_with_blocks(shape["depth"], enc, shape["middle_blocks"], dec)
  if not routed or not set(routed) <= set(known):
    raise ConfigError(f"moe.stages for restoration names U-Net levels with blocks, some of "
                      f"{known}; got {cfg.stages!r}")
  if cfg.get("dispatch", "dense") != "dense":   # was ignored without a word
    raise ConfigError(f"moe.dispatch={cfg.dispatch!r} is the classifier student's option: "
                      f"restoration's MoE student runs every expert copy and weighs them "
                      f"per pixel; leave moe.dispatch='dense'")
  routing = {"pixel": "pixel", "image": "image"}.get(cfg.routing)
  source = cfg.get("router_input", "stage")
  if routing is None or source not in ROUTER_SOURCES:
    raise ConfigError(f"restoration's MoE student needs moe.routing 'pixel' or 'image' and "
                      f"moe.router_input in {ROUTER_SOURCES}; got {cfg.routing!r}, "
                      f"{source!r}")
  return RoutedUNet(**shape, base=o["model"], **restoration.model_options(o),
                    num_experts=len(parse_list(config.degradations)), k=k, routed=routed,
                    routing=routing, router_source=source, num_prompts=int(cfg.num_prompts),
                    noisy_gating=bool(cfg.get("noisy_gating", False)),
                    prompt_init_scale=float(cfg.get("prompt_init_scale", 1.0)),
                    channel_sharing=bool(cfg.channel_sharing), expert_loop=cfg.expert_loop)
