"""``python -m fdjax.bench restoration``: every variant builds as a study builds it, and
the benchmark prints patches/s and megapixels/s (tiny setting, the plain U-Net only: the
cheapest to compile; the others differ only in ``build``), and with ``--torch`` (needs
PyTorch) every variant's ratio to its PyTorch twin."""

import re

import jax
import pytest

from fdjax.bench import restoration, restoration_peers
from fdjax.models import MEASNet, NAFNet, PromptIR, UNet
from fdjax.moe.unet_student import RoutedUNet
from fdjax.train import init_variables

TINY = ["--width", "4", "--depth", "1", "--patch", "16", "--batch", "2", "--steps", "1",
        "--repeats", "1", "--warmup", "1", "--infer-size", "16", "--experts", "2"]


def test_every_variant_builds_from_a_restoration_config():
  args = restoration._parse(TINY)
  kinds = {"unet": UNet, "nafnet": NAFNet, "promptir": PromptIR, "measnet": MEASNet,
           "moe": RoutedUNet}
  for variant in restoration.VARIANTS:
    model = restoration.build(variant, args)
    assert type(model) is kinds[variant] and model.width == 4 and model.depth == 1
    shapes = jax.eval_shape(lambda m=model: init_variables(m, jax.random.key(0), (16, 16, 3)))
    assert restoration.moe.param_count(shapes) > 0
  assert restoration.build("moe", args).num_experts == 2
  with pytest.raises(SystemExit):
    restoration._parse(["--variants", "unet,restormer"])


def test_restoration_bench_prints_patches_and_megapixels_per_second(capsys):
  from fdjax.bench.__main__ import main
  main(["restoration", "--variants", "unet", *TINY])
  out = capsys.readouterr().out
  assert re.search(r"on cpu .*CPU \S", out), out
  assert re.search(r"\nunet +[0-9,]+ params  train +[0-9.]+ patches/s  inference +[0-9.]+ "
                   r"megapixels/s", out), out


def test_restoration_bench_times_the_torch_peers_with_a_ratio(capsys):
  pytest.importorskip("torch")
  from fdjax.bench.__main__ import main
  main(["restoration", "--torch", *TINY])   # every variant
  out = capsys.readouterr().out
  # JAX on the CPU here: the peer too, with its threads named
  assert "PyTorch " in out and re.search(r" on cpu, float32, with \d+ threads\n", out)
  for variant in restoration.VARIANTS:
    label = "moe \\(2 experts, decoder1, K=2\\)" if variant == "moe" else variant
    found = re.search(rf"\n{label} +[0-9,]+ params  train +([0-9.]+) patches/s  \(PyTorch "
                      r"([0-9.]+) patches/s: ([0-9.]+)x\)  inference +([0-9.]+) megapixels/s  "
                      r"\(PyTorch ([0-9.]+) megapixels/s: ([0-9.]+)x\)", out)
    assert found, out
    ours, peer, ratio, mine, theirs, times = map(float, found.groups())
    # Rates are printed to 0.1 patches/s or 0.01 megapixels/s and ratios to 0.01 (from
    # the unrounded rates): the printed rates bound each ratio to within their rounding.
    for a, b, r, half in ((ours, peer, ratio, 0.05), (mine, theirs, times, 0.005)):
      top = (a + half) / (b - half) + 0.005 if b > half else float("inf")   # "0.00" printed
      assert (a - half) / (b + half) - 0.005 <= r <= top


def test_the_torch_peer_must_be_the_same_network_and_a_variant_must_be_named():
  with pytest.raises(SystemExit):   # would print the header and no row
    restoration._parse(["--variants", ",", "--torch"])
  pytest.importorskip("torch")
  args = restoration._parse(["--variants", "unet", "--torch", *TINY])
  for variant in restoration.VARIANTS:
    model = restoration.build(variant, args)
    params = restoration.moe.param_count(jax.eval_shape(lambda m=model: init_variables(
        m, jax.random.key(0), (16, 16, 3))))
    # the same count: no complaint
    restoration_peers.torch_train_runner(variant, model, args, params)
    with pytest.raises(SystemExit, match=f"has {params:,} parameters, fdjax's {params + 1:,}"):
      restoration_peers.torch_train_runner(variant, model, args, params + 1)
  # options the twins do not implement, though the parameter counts would agree
  for variant, option in (("moe", {"routing": "image"}),
                          ("measnet", {"renormalize_gates": False})):
    model = restoration.build(variant, args).clone(**option)
    with pytest.raises(SystemExit, match=f"twin of {variant} implements {next(iter(option))}"):
      restoration_peers.torch_train_runner(variant, model, args, 0)


def test_the_load_warning_names_cpus_1_only_where_it_would_pin(monkeypatch):
  from fdjax.bench import host

  assert host.cpu_model() and re.fullmatch(r"CPU .+, \d+ CPU\(s\), load average 3\.0",
                                           host.describe(3.0))
  monkeypatch.setattr(host, "cpus", lambda: 2)
  monkeypatch.setattr(host.os, "cpu_count", lambda: 2)
  assert host.load_note(0.9) is None and host.load_note(float("nan")) is None
  assert "load average 1.5 on the machine's 2 CPU(s)" in host.load_note(1.5)
  assert host.load_note(1.5).endswith("or with --cpus 1")
  # Pinned to one CPU already: the load average is still the whole machine's, so it is
  # weighed against the machine's CPUs (1.4 on 2 warned as "on 1 CPU(s)").
  monkeypatch.setattr(host, "cpus", lambda: 1)
  assert host.load_note(0.9) is None
  assert host.load_note(1.5).endswith("rerun on an idle machine")


def test_the_torch_peers_training_loss_adds_the_weighted_balance_loss_of_the_routed_rows():
  torch = pytest.importorskip("torch")
  from fdjax.bench import torch_moe

  args = restoration._parse(["--torch", *TINY])
  for variant in restoration.VARIANTS:
    model = restoration.build(variant, args)
    if variant == "measnet":   # its own weight, told apart from the student's
      model = model.clone(balance_weight=0.5)
    net = restoration_peers.torch_model(variant, model)
    term = restoration_peers.torch_regularizer(variant, model, net)
    if variant not in ("measnet", "moe"):
      assert term is None and not torch_moe.routers(net)
      continue
    with torch.no_grad():
      net(torch.rand(2, 3, 16, 16))
    aux = float(sum(r.aux for r in torch_moe.routers(net)))
    weight = model.balance_weight if variant == "measnet" else restoration_peers.BALANCE_WEIGHT
    assert aux > 0 and float(term()) == pytest.approx(weight * aux, rel=1e-6)
