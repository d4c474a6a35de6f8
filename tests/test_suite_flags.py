"""The XLA flags the suite adds for compile speed (``tests/conftest.py``): the older fusion
emitters only on the jaxlib versions that know the flag, and never over the caller's own."""

import os

from conftest import OLD_FUSION_EMITTERS, TEST_XLA_FLAGS, suite_xla_flags
from fdjax import cpu_flags


def test_old_fusion_emitters_only_on_jaxlib_0_10():
  assert suite_xla_flags("", "0.10.2").split() == [TEST_XLA_FLAGS, OLD_FUSION_EMITTERS]
  # jaxlib 0.12 aborts on the flag ("Unknown flag in XLA_FLAGS"); an unreadable version
  # or no jaxlib adds nothing it might not know either.
  for version in ("0.12.1", "0.9.2", "1.10.0", "dev", None):
    assert suite_xla_flags("", version) == TEST_XLA_FLAGS
  # an accelerator plugin's own XLA parses XLA_FLAGS too, and may not know the flag
  assert suite_xla_flags("", "0.10.2", accelerator=True) == TEST_XLA_FLAGS


def test_the_callers_flags_win():
  mine = "--xla_cpu_use_fusion_emitters=true --xla_backend_optimization_level=2"
  assert suite_xla_flags(mine, "0.10.2") == ""
  assert suite_xla_flags("--xla_cpu_use_fusion_emitters=true", "0.10.2") == TEST_XLA_FLAGS
  assert suite_xla_flags("--xla_dump_to=/tmp/x", "0.10.2").split() == [
      TEST_XLA_FLAGS, OLD_FUSION_EMITTERS]


def test_this_process_runs_with_them():
  flags = os.environ["XLA_FLAGS"]
  assert cpu_flags.sets_flag(flags, TEST_XLA_FLAGS)
  old = (cpu_flags.jaxlib_minor(cpu_flags.installed_jaxlib()) == (0, 10)
         and not cpu_flags.accelerator_in_use(os.environ))
  assert cpu_flags.sets_flag(flags, OLD_FUSION_EMITTERS) == old
