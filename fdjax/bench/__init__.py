"""Benchmarks: ``python -m fdjax.bench <subcommand> [flags]``.

Subcommands: ``train_step`` (training images/s of the fdjax engine vs PyTorch,
see ``fdjax.bench.train_step``) and ``degradations`` (``fdjax.bench.degradations``).
"""
