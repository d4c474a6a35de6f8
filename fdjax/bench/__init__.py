"""Benchmarks: ``python -m fdjax.bench <subcommand> [flags]``.

The subcommands are the table ``SUBCOMMANDS`` of ``fdjax.bench.__main__``, one module
each: ``train_step`` (training images/s of the fdjax engine vs PyTorch), ``degradations``
(the classification degradations vs the paper's CPU pipeline), ``restoration``
(restoration models' training and inference speed), ``restoration_degradations`` (the
restoration degradations and their per-image convolution), ``moe``, ``population``,
``conv_grad``.
"""
