"""fdjax.bench: torch twin has the flax ResNet's parameter count; train_step bench runs."""

import re

import jax
import jax.numpy as jnp
import pytest

from fdjax.bench import train_step
from fdjax.models import cifar_resnet


@pytest.mark.parametrize("head", ["gap", "reference"])
def test_torch_resnet_has_flax_parameter_count(head):
  torch = pytest.importorskip("torch")
  from fdjax.bench import torch_resnet
  flax_model = cifar_resnet(8, 10, head=head)
  shapes = jax.eval_shape(lambda: flax_model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                                                  train=False))  # shapes only: no compile
  model = torch_resnet.cifar_resnet(8, 10, head=head)
  assert torch_resnet.param_count(model) == train_step.param_count(shapes["params"])
  # The torch twin runs on NCHW batches and returns [B, classes] logits.
  assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_train_step_bench_prints_images_per_second(capsys):
  from fdjax.bench.__main__ import main
  main(["train_step", "--depths", "8", "--batch", "16", "--steps", "2", "--repeats", "1",
        "--warmup", "1", "--dtypes", "float32"])   # bfloat16's lines: tests/test_bf16.py
  out = capsys.readouterr().out
  assert re.search(r"resnet-8 .*fdjax [0-9.]+ images/s", out), out


def test_unknown_subcommand_exits_with_message():
  from fdjax.bench.__main__ import main
  with pytest.raises(SystemExit, match="unknown subcommand"):
    main(["nope"])


def test_the_usage_names_what_each_subcommand_measures(capsys):
  from fdjax.bench.__main__ import SUBCOMMANDS, main
  main(["--help"])
  lines = capsys.readouterr().out.splitlines()
  for name in SUBCOMMANDS:
    described = [line for line in lines if line.split()[:1] == [name]]
    assert len(described) == 1 and len(described[0].split()) > 3, (name, lines)


def test_a_user_error_in_a_subcommand_is_one_error_line_not_a_traceback(capsys, tmp_path):
  from fdjax.bench.__main__ import main
  with pytest.raises(SystemExit) as exit_:
    main(["moe", f"--workdir={tmp_path / 'none'}"])
  assert exit_.value.code == 2
  assert capsys.readouterr().err == f"error: run folder {tmp_path / 'none'} does not exist\n"
  with pytest.raises(SystemExit) as exit_:
    main(["degradations", f"--source=folder:{tmp_path / 'none'}", "--repeats=1"])
  assert exit_.value.code == 2
  assert capsys.readouterr().err.startswith(f"error: --source folder:{tmp_path / 'none'}: ")


def test_missing_subcommand_module_exits_with_message():
  from fdjax.bench.__main__ import _lazy
  with pytest.raises(SystemExit, match="does not exist"):
    _lazy("fdjax.bench.no_such_subcommand")([])


def test_conv_grad_forms_equal_the_weight_gradient_by_hand(capsys, monkeypatch):
  import numpy as np
  from fdjax.bench import conv_grad
  rng = np.random.default_rng(0)
  x, dy = rng.normal(size=(2, 5, 5, 3)), rng.normal(size=(2, 5, 5, 4))
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  # dL/dW[i, j, c, d] = sum over n, h, w of x_pad[n, h + i, w + j, c] * dy[n, h, w, d]
  expected = np.stack([np.einsum("nhwc,nhwd->cd", padded[:, i:i + 5, j:j + 5], dy)
                       for i in range(3) for j in range(3)]).reshape(3, 3, 3, 4)
  w = jnp.zeros((3, 3, 3, 4))
  for name, form in conv_grad.FORMS.items():
    got = form(jnp.asarray(x, jnp.float32), w, jnp.asarray(dy, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4, err_msg=name)
  monkeypatch.setattr(conv_grad, "SHAPES", ((4, 2),))   # the table's format, not its speed
  conv_grad.main(["--batch", "2", "--calls", "1", "--repeats", "1"])
  out = capsys.readouterr().out
  assert re.search(r"\| 4, 2 \| [0-9.]+ ms \| [0-9.]+ ms \| [0-9.]+ ms \| "
                   r"[0-9.]+, [0-9.]+ \| ", out), out   # the other forms' time over xla's


def test_a_timed_benchmark_refuses_to_time_the_compiling_step():
  # --warmup 0 put compilation inside the first timed repeat.
  from fdjax.bench import restoration
  with pytest.raises(SystemExit, match="--warmup must be >= 1"):
    train_step.main(["--depths", "8", "--warmup", "0", "--no-torch"])
  with pytest.raises(SystemExit):
    restoration._parse(["--warmup", "0"])


@pytest.mark.parametrize("bench, args, message", [
    ("moe", ["--repeats", "0"], "--repeats must be at least 1"),
    ("population", ["--repeats", "0"], "--repeats must be at least 1"),
    # these crashed (no median of nothing, inf ms) or failed after minutes of work
    ("degradations", ["--repeats", "0"], "--repeats must be at least 1"),
    ("train_step", ["--repeats", "0", "--no-torch"], "--repeats must be at least 1"),
    ("restoration_degradations", ["--size", "32"], "--patch 48 is larger than the 32x32"),
    ("restoration", ["--infer-size", "30"], "--infer-size must be a multiple of the U-Net's"),
    ("conv_grad", ["--calls", "0"], "--calls must be at least 1"),
    # these were tracebacks (ValueError from the library, after the imports and the data)
    ("degradations", ["--names", "jpg"], "--names has unknown ['jpg']; choose from awgn,blur,"),
    ("degradations", ["--source", "fold:x"], "--source 'fold:x': use auto, synthetic or"),
    ("restoration_degradations", ["--names", ","], "--names names none; choose from awgn,"),
    ("train_step", ["--depths", "20,7", "--no-torch"], "--depths must be CIFAR ResNet depths"),
    ("moe", ["--depth", "x"], "--depth must be CIFAR ResNet depths 6n+2"),
    ("population", ["--depth", "9"], "--depth must be CIFAR ResNet depths 6n+2"),
    ("population", ["--depth", "8,20"], "--depth takes one depth, got '8,20'"),
    ("restoration", ["--variants", "unet,foo"], "--variants has unknown ['foo']; choose from"),
])
def test_bad_settings_are_usage_errors_before_any_timing(bench, args, message, capsys):
  import importlib
  module = importlib.import_module(f"fdjax.bench.{bench}")
  with pytest.raises(SystemExit) as exit_:
    module.main(args)
  assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_the_load_warning_offers_cpus_only_where_the_flag_exists(monkeypatch):
  from fdjax.bench import host
  monkeypatch.setattr(host, "cpus", lambda: 2)
  assert "--cpus 1" in host.load_note(1e6)
  assert "--cpus" not in host.load_note(1e6, pinnable=False)   # moe, population
