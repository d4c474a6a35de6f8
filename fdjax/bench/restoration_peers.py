"""The PyTorch twins of ``python -m fdjax.bench restoration --torch``: each variant's peer
network (``fdjax.bench.torch_unet`` with the blocks of ``torch_nafnet``,
``torch_promptir`` and ``torch_moe``), its training steps (``torch.optim.RAdam``, L1
plus the routed variants' weighted balance loss, as ``restoration.train_runner``'s
loss) and its inference rate. ``fdjax.bench.restoration``'s docstring says how they
are timed. Importing this module does not import ``torch``; calling its functions does.
"""

from __future__ import annotations

import jax

from fdjax import moe

# The training step both sides run (fdjax's in ``restoration.train_runner``): RAdam at a
# constant rate with coupled L2 weight decay (fdjax's default 1e-4), and the MoE
# student's balance loss weighted by BALANCE_WEIGHT (MEASNet's by its own
# ``balance_weight``).
BALANCE_WEIGHT = 1e-4
LR, WEIGHT_DECAY = 1e-4, 1e-4


# The options of the routed variants that their PyTorch twins implement (the values a
# study's config gives them here); any other value is refused, not timed on another network.
TWIN_OPTIONS = {"measnet": {"noisy_gating": False, "channel_sharing": False,
                            "renormalize_gates": True},
                "moe": {"base": "unet", "routing": "pixel", "router_source": "stage",
                        "noisy_gating": False, "channel_sharing": False}}


def torch_model(variant: str, model):
  """The PyTorch peer (random weights) of flax ``model``, variant ``variant``, with its
  width, depth, prompt sizes and routing options; a SystemExit for an option of
  ``TWIN_OPTIONS`` that the twin does not implement."""
  for name, value in TWIN_OPTIONS.get(variant, {}).items():
    if getattr(model, name) != value:
      raise SystemExit(f"the PyTorch twin of {variant} implements {name}={value!r} only; "
                       f"fdjax's model has {name}={getattr(model, name)!r}")
  # pylint: disable-next=import-outside-toplevel
  from fdjax.bench import torch_moe, torch_nafnet, torch_promptir, torch_unet

  block = torch_nafnet.NAFBlock if variant == "nafnet" else torch_unet.ConvBlock
  before_up = (torch_promptir.prompt_blocks(model.prompt_dim, model.prompt_size,
                                            model.num_prompts) if variant == "promptir" else None)
  block_at = None
  if variant == "measnet":
    block_at = torch_moe.meas_blocks(model.num_experts, model.k, model.mlp_expand,
                                     model.num_prompts)
  elif variant == "moe":
    block_at = torch_moe.routed_blocks(model.routed, model.num_experts, model.k,
                                       model.num_prompts)
  return torch_unet.UNet(model.width, model.depth, block=block, before_up=before_up,
                         block_at=block_at)


def torch_regularizer(variant: str, model, net):
  """``term()``: the PyTorch peer ``net``'s term that fdjax's training loss adds to L1
  (``restoration.train_runner``'s ``loss_fn``), read after each forward pass of ``net``:
  the weighted balance loss of MEASNet (its ``balance_weight``) and of the MoE student
  (``BALANCE_WEIGHT``); None for the others. Its routers are found once, here, not in
  every timed step."""
  if variant not in ("measnet", "moe"):
    return None
  from fdjax.bench import torch_moe  # pylint: disable=import-outside-toplevel

  weight = model.balance_weight if variant == "measnet" else BALANCE_WEIGHT
  routers = torch_moe.routers(net)
  return lambda: weight * torch_moe.balance_loss(routers)


def _torch_peer(variant: str, model, args, train: bool):
  """``(net, device, autocast)``: the PyTorch peer of ``variant``'s flax ``model`` (seed 0)
  in train or eval mode on ``torch_device()``, and the autocast context of ``--dtype``
  (bfloat16: PyTorch's mixed precision too, fp32 weights and bf16 compute, as fdjax's)."""
  import torch  # pylint: disable=import-outside-toplevel

  device = torch_device()
  torch.manual_seed(0)
  net = torch_model(variant, model).train(train).to(device)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")
  return net, device, autocast


def torch_train_runner(variant: str, model, args, params: int):
  """``run(steps)``: PyTorch's training steps of the peer of ``variant``'s flax ``model``
  (``--torch``); a SystemExit unless it has ``model``'s ``params`` parameters."""
  import torch  # pylint: disable=import-outside-toplevel

  net, device, autocast = _torch_peer(variant, model, args, train=True)
  count = sum(p.numel() for p in net.parameters())
  if count != params:
    raise SystemExit(f"the PyTorch {variant} has {count:,} parameters, fdjax's {params:,}: "
                     "they are not the same network (fdjax.bench.torch_unet follows "
                     "fdjax.models.unet's defaults: one block per level, one middle block)")
  opt = torch.optim.RAdam(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)   # coupled L2
  images, targets = torch.rand(2, args.batch, 3, args.patch, args.patch, device=device)
  regularizer = torch_regularizer(variant, model, net)

  def run(steps: int) -> None:
    for _ in range(steps):
      opt.zero_grad(set_to_none=True)
      with autocast:
        loss = (net(images).float() - targets).abs().mean()
        if regularizer is not None:
          loss = loss + regularizer()
      loss.backward()
      opt.step()
    if device == "cuda":
      torch.cuda.synchronize()

  return run


def torch_inference_rate(variant: str, model, args) -> float:
  """PyTorch's inference of the peer of ``variant``'s flax ``model`` (``--torch``) in
  images/s: the forward pass under ``torch.no_grad`` in eval mode on ``--infer-batch``
  images of ``--infer-size`` squared, timed by ``fdjax.moe.images_per_second`` as
  fdjax's is (one untimed call, then the median of ``--repeats`` calls, each
  synchronised)."""
  import torch  # pylint: disable=import-outside-toplevel

  net, device, autocast = _torch_peer(variant, model, args, train=False)
  images = torch.rand(args.infer_batch, 3, args.infer_size, args.infer_size, device=device)

  def predict(_, batch) -> None:   # returns nothing for block_until_ready to wait on
    with torch.no_grad(), autocast:
      net(batch)
    if device == "cuda":
      torch.cuda.synchronize()

  return moe.images_per_second(predict, None, images, warmup=1, repeats=args.repeats)


def torch_device() -> str:
  """Where the PyTorch peer runs: ``'cuda'`` when JAX runs on a GPU and PyTorch sees one
  (the two then share the accelerator), else ``'cpu'``."""
  import torch  # pylint: disable=import-outside-toplevel

  return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
