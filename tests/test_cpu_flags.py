"""fdjax.cpu_flags: the XLA:CPU default (Eigen convolutions) and when it is not applied."""

import os
import subprocess
import sys

import pytest

from fdjax import cpu_flags

FLAG = cpu_flags.EIGEN_CONVOLUTIONS


def test_default_flags_appends_only_on_tested_jaxlib_without_a_user_choice():
  assert cpu_flags.default_flags("", "0.10.2") == FLAG
  assert cpu_flags.default_flags("--xla_foo=1", "0.10.0") == f"--xla_foo=1 {FLAG}"
  # untested versions (an unknown flag would be fatal), unknown jaxlib, opt-out: unchanged
  for version in ("0.9.1", "0.11.0", "1.10.0", "weird", None):
    assert cpu_flags.default_flags("--xla_foo=1", version) == "--xla_foo=1"
  assert cpu_flags.default_flags("", "0.10.2", opt_out="0") == ""
  assert cpu_flags.default_flags("", "0.10.2", opt_out="1") == FLAG
  # the user's own value of the flag wins, whatever it is
  mine = f"{cpu_flags.FLAG_NAME}=+individual_convolution --xla_foo=1"
  assert cpu_flags.default_flags(mine, "0.10.2") == mine


def test_not_applied_where_an_accelerator_plugin_may_be_used(monkeypatch, tmp_path):
  # A plugin parses XLA_FLAGS with its own XLA (libtpu is built apart from jaxlib): an
  # experimental CPU flag it does not know aborts the process, and buys it nothing.
  assert cpu_flags.default_flags("", "0.10.2", accelerator=True) == ""
  (tmp_path / "jax_plugins" / "xla_fake").mkdir(parents=True)   # a namespace package
  (tmp_path / "jax_plugins" / "xla_fake" / "__init__.py").write_text("")
  (tmp_path / "jax_cuda99_plugin").mkdir()
  (tmp_path / "jax_cuda99_plugin" / "__init__.py").write_text("")
  monkeypatch.syspath_prepend(str(tmp_path))
  try:
    found = cpu_flags._accelerator_plugins()
  finally:
    sys.modules.pop("jax_plugins", None)
  assert "jax_plugins.xla_fake" in found and "jax_cuda99_plugin" in found
  monkeypatch.setattr(cpu_flags, "_backends_started", lambda: False)
  monkeypatch.setattr(cpu_flags, "installed_jaxlib", lambda: "0.10.2")
  monkeypatch.setattr(cpu_flags, "_accelerator_plugins", lambda: ["libtpu"])
  env = {}
  assert not cpu_flags.apply_defaults(env) and env == {}
  env = {"JAX_PLATFORMS": "cpu"}   # the plugin is there but not used
  assert cpu_flags.apply_defaults(env) and env["XLA_FLAGS"] == FLAG
  monkeypatch.setattr(cpu_flags, "_accelerator_plugins", lambda: [])
  env = {}
  assert cpu_flags.apply_defaults(env) and env["XLA_FLAGS"] == FLAG


def test_apply_defaults_edits_the_given_environment_once():
  env = {}
  changed = cpu_flags.apply_defaults(env)   # this test process's JAX may have started:
  if cpu_flags._backends_started():         # then nothing may change
    assert not changed and env == {}
    return
  expected = cpu_flags.default_flags("", cpu_flags.installed_jaxlib(),
                                     accelerator=bool(cpu_flags._accelerator_plugins()))
  assert changed == bool(expected) and env.get("XLA_FLAGS", "") == expected
  assert not cpu_flags.apply_defaults(env)  # idempotent


SCRIPT = """
from fdjax import cpu_flags
import os
changed = cpu_flags.apply_defaults()
import jax, jax.numpy as jnp
def loss(x, w):
  y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return jnp.sum(jax.nn.relu(y))
grad = jax.jit(jax.grad(loss, argnums=1))
x, w = jnp.ones((8, 48, 48, 24)), jnp.ones((3, 3, 24, 24))
text = grad.lower(x, w).compile().as_text()
print('changed', changed, os.environ.get('XLA_FLAGS', ''))
print('ynn', 'ynn_fusion' in text)
print('grad', float(grad(x, w)[1, 1, 0, 0]))
print('again', cpu_flags.apply_defaults())
"""


def _fresh_python(opt_out: str | None) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", cpu_flags.OPT_OUT_ENV)}
  env["JAX_PLATFORMS"] = "cpu"
  if opt_out is not None:
    env[cpu_flags.OPT_OUT_ENV] = opt_out
  out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return dict(line.split(" ", 1) for line in out.stdout.splitlines())


def test_flag_reaches_xla_and_moves_convolutions_out_of_ynnpack():
  """In a fresh Python, ``apply_defaults`` before JAX starts: XLA accepts the flag (an
  unknown one would abort) and the compiled weight gradient of a 3x3 convolution holds
  no YNNPACK fusion, where XLA's default (opted out) has one; the gradient's value is
  the closed form either way; once JAX has started, ``apply_defaults`` changes nothing."""
  if cpu_flags.default_flags("", cpu_flags.installed_jaxlib()) == "":
    pytest.skip(f"jaxlib {cpu_flags.installed_jaxlib()} is not in TESTED_JAXLIB")
  ours, xlas = _fresh_python(None), _fresh_python("0")
  assert ours["changed"] == f"True {FLAG}" and xlas["changed"].startswith("False")
  assert ours["ynn"] == "False" and xlas["ynn"] == "True"
  # d/dw of sum(relu(conv)) with all-ones inputs: each tap sums the input over the
  # positions it reads: the centre tap (1, 1) reads all 8 x 48 x 48 pixels
  assert float(ours["grad"]) == float(xlas["grad"]) == 8 * 48 * 48
  assert ours["again"] == xlas["again"] == "False"
