"""Runs an fdjax absl command's ``main`` in-process (shared by test_apply.py and
test_paired.py): parses ``args`` as the command line would, then calls ``main``."""

from absl import flags


def run_main(main, program: str, *args: str) -> None:
  """``python -m <program> *args`` without a subprocess; the flags are reset after."""
  flags.FLAGS.unparse_flags()
  flags.FLAGS([program, *args])
  try:
    main([program])
  finally:
    flags.FLAGS.unparse_flags()
