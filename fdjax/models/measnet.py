"""A MEASNet-style restorer (Yu et al., "Multi-Expert Adaptive Selection: Task-Balancing
for All-in-One Image Restoration"): the plain U-Net of ``fdjax.models.unet`` whose
decoder blocks end in a per-pixel mixture of expert MLPs.

Decoder block (channels ``c``, ``E`` experts, top-``K``)::

    y = ConvBlock(x)                                    # x + conv3x3(relu(conv3x3(x)))
    gates = top_K(softmax(PromptRouter(y)))             # [B, H, W, E], per pixel (STP-G-MESE)
    out = y + sum_e gates[..., e] * MLP_e(y)            # MLP_e: 1x1 conv c -> h, ReLU, h -> c

The router is MEASNet's (``fdjax.moe.router``: TSPG task prompts from the block's
ConvBlock output ``y``, expert prompts, eq. 2), with the gate, top-K and CV^2 balance loss of
``fdjax.moe.routing.route`` (eqs. 2-6; the K kept gates renormalised to sum to 1 unless
``renormalize_gates=False``, eq. 3's raw probabilities). The experts are 1x1-convolution MLPs with
``h = mlp_expand * c`` hidden channels, all evaluated on every pixel and combined with
the (mostly zero) gates (dense dispatch). What is left out of MEASNet: its
transformer layers (plain 3x3 convolutions instead) and the frequency-decomposed
global experts (FD-MEE). What differs: the task prompts come from each routed block's
own features ``y``, where MEASNet derives one task prompt from the degraded input image
(TSPG) and feeds it to every routed module (a linear map per module); the routed blocks
are the decoder's, where MEASNet's code routes the inputs of encoder levels 1-3 and
keeps FD-MEE in the decoder; the skeleton is NAFNet's (``fdjax.models.unet``), not
Restormer's. MEASNet's official code also departs
from its paper's equations in ways fdjax does not follow (``fdjax.moe.gating``).

MUIRF options, as for the classifier student: ``channel_sharing`` adds a shared MLP
(``ffn_moe/shared``) mixed per image and channel with the experts' output by the gate
of ``fdjax.moe.routing.channel_share``; gradient homogenization treats
``.../ffn_moe/experts/...`` as task-specific, everything else as shared
(``fdjax.moe.student.shared_param``). ``noisy_gating``: Shazeer's noisy top-K in
training (PRNG stream ``'gating'``).

Inputs, outputs and ``stride`` as for ``UNet``. ``features`` adds, for every routed
block ``<name>`` (``'decoder<l>_block<b>'``): ``router_<name>`` (gates ``[B, h, w, E]``
after top-K) and ``router_logits_<name>``; ``router`` / ``router_logits``: those of the
finest-resolution routed block (the last one run); ``aux_loss``: the sum of the
blocks' unweighted balance losses; ``regularizer``: ``balance_weight * aux_loss``, the
term the training losses (``fdjax.train.objectives``, ``fdjax.distill``) add.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fdjax.models.unet import ConvBlock, UNetShape, unet
from fdjax.moe.routing import channel_share, route, routing_features


class ExpertMLPs(nn.Module):
  """E two-layer 1x1-convolution MLPs ``c -> hidden -> c`` (ReLU), weights stacked on a
  leading expert axis: ``kernel1 [E, c, hidden]``, ``bias1 [E, hidden]``, ``kernel2 [E,
  hidden, c]``, ``bias2 [E, c]``. ``[B, H, W, c] -> [E, B, H, W, c]``."""

  num_experts: int
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    e, c, h = self.num_experts, x.shape[-1], self.hidden
    init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    k1 = self.param("kernel1", init, (e, c, h))
    b1 = self.param("bias1", nn.initializers.zeros, (e, h))
    k2 = self.param("kernel2", init, (e, h, c))
    b2 = self.param("bias2", nn.initializers.zeros, (e, c))
    dt = self.dtype
    y = jnp.einsum("bhwc,ecd->ebhwd", x.astype(dt), k1.astype(dt)) + b1.astype(dt)[:, None,
                                                                                     None, None]
    y = nn.relu(y)
    return jnp.einsum("ebhwd,edc->ebhwc", y, k2.astype(dt)) + b2.astype(dt)[:, None, None, None]


class MoEMLP(nn.Module):
  """The routed MLP of a MEASNet block (module docstring): ``x [B, H, W, c] ->
  (sum_e gates_e * MLP_e(x) [B, H, W, c], routing, channel_gate or None)``."""

  channels: int
  num_experts: int = 4
  k: int = 2
  mlp_expand: int = 2
  num_prompts: int = 8
  noisy_gating: bool = False
  channel_sharing: bool = False
  prompt_init_scale: float = 1.0
  renormalize_gates: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    r = route(self, x, num_experts=self.num_experts, k=self.k, per_pixel=True,
              num_prompts=self.num_prompts, noisy=self.noisy_gating,
              prompt_init_scale=self.prompt_init_scale,
              renormalize=self.renormalize_gates, train=train)
    hidden = self.mlp_expand * self.channels
    y = ExpertMLPs(self.num_experts, hidden, self.dtype, name="experts")(x)  # [E, B, H, W, c]
    out = jnp.einsum("ebhwc,bhwe->bhwc", y, r.gates.astype(y.dtype))       # MEASNet eq. (3)
    channel_gate = None
    if self.channel_sharing:
      shared = ExpertMLPs(1, hidden, self.dtype, name="shared")(x)[0]
      out, channel_gate = channel_share(self, shared, out, x, self.channels)
    return out, r, channel_gate


class MEASBlock(nn.Module):
  """``y = ConvBlock(x)``, ``out = y + MoEMLP(y)``; returns ``(out, info)`` with ``info``
  the routing (``fdjax.moe.routing.Routing``) and the channel gate (or None)."""

  channels: int
  moe: dict
  train: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = ConvBlock(self.channels, self.dtype, name="conv")(x)
    mixed, routing, channel_gate = MoEMLP(self.channels, **self.moe, dtype=self.dtype,
                                          name="ffn_moe")(y, self.train)
    return y + mixed, {"routing": routing, "channel_gate": channel_gate}


class MEASNet(UNetShape):
  """The MEASNet-style U-Net (module docstring).

  Attributes:
    width, depth, blocks, middle_blocks, decoder_blocks, dtype: as for ``UNet``;
      encoder and middle blocks are ``ConvBlock``s, decoder blocks ``MEASBlock``s.
    num_experts, k: E expert MLPs per decoder block, top-K per pixel (MEASNet: K = 2).
    mlp_expand: hidden channels of each expert MLP = ``mlp_expand * channels``.
    num_prompts: basic (task) prompts of each router.
    balance_weight: lambda of the balance loss in ``features['regularizer']`` (1e-4).
    noisy_gating, channel_sharing, prompt_init_scale: see the module docstring and
      ``fdjax.moe.routing.route``.
    renormalize_gates: True (default) weights the K kept experts by their softmax
      probabilities renormalised to sum to 1, as fdjax's MoE students; False by the raw
      probabilities, MEASNet's eq. (3) as printed (the expert branch then carries the
      kept experts' share of the probability, 0.5-0.8 at K = 2 of E = 4).
  """

  num_experts: int = 4
  k: int = 2
  mlp_expand: int = 2
  num_prompts: int = 8
  balance_weight: float = 1e-4
  noisy_gating: bool = False
  channel_sharing: bool = False
  prompt_init_scale: float = 1.0
  renormalize_gates: bool = True

  @property
  def pools_globally(self) -> bool:
    """True: each router's prompt pools its block's features over the whole input
    (``UNetShape.pools_globally``)."""
    return True

  @nn.compact
  def __call__(self, x, train: bool = False):
    """x float ``[B, H, W, 3]`` in 0..1 (4 channels: ``image_prior``'s cue given); returns
    ``(image float32 [B, H, W, 3], features)``."""
    enc, dec = self.levels(x, "MEASNet")
    if not 1 <= self.k <= self.num_experts:
      raise ValueError(f"MEASNet needs 1 <= k <= num_experts ({self.num_experts}), "
                       f"got k={self.k}")
    moe = dict(num_experts=self.num_experts, k=self.k, mlp_expand=self.mlp_expand,
               num_prompts=self.num_prompts, noisy_gating=self.noisy_gating,
               channel_sharing=self.channel_sharing, prompt_init_scale=self.prompt_init_scale,
               renormalize_gates=self.renormalize_gates)

    def block(channels, name):
      if name.startswith("decoder"):
        return MEASBlock(channels, moe, train, self.dtype, name=name)
      return ConvBlock(channels, self.dtype, name=name)

    extras: dict = {}
    image, features = unet(x, block, width=self.width, depth=self.depth, blocks=enc,
                           middle_blocks=self.middle_blocks, decoder_blocks=dec,
                           dtype=self.dtype, extras=extras, image_prior=self.image_prior)
    features.update(routing_features(extras))
    features["regularizer"] = self.balance_weight * features["aux_loss"]
    return image, features

