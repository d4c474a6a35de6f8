"""fdjax: consolidate per-degradation experts into one model (FusionDistill and friends)."""

__version__ = "0.1.0"


def restore(workdir: str, method: str = "fusiondistill", seed: int | None = None,
            k: int | None = None):
  """See ``fdjax.restore_run.restore``: model, variables and a jitted uint8 -> logits predict."""
  from fdjax.restore_run import restore as _restore

  return _restore(workdir, method, seed, k)
