"""fdjax: consolidate per-degradation experts into one model (FusionDistill and friends)."""

__version__ = "0.1.0"


def load_model(workdir: str, method: str = "fusiondistill", seed: int | None = None,
               k: int | None = None):
  """See ``fdjax.load.load_model``: model, variables and a jitted uint8 -> outputs predict."""
  from fdjax.load import load_model as _load_model

  return _load_model(workdir, method, seed, k)


def load_predictor(run: str, method: str = "fusiondistill", seed: int | None = None, **options):
  """See ``fdjax.predictor.load_predictor``: a finished run as ``uint8 image -> uint8
  image`` (restoration) or ``-> class index`` (classification)."""
  from fdjax.predictor import load_predictor as _load_predictor

  return _load_predictor(run, method, seed, **options)


def restore(workdir: str, method: str = "fusiondistill", seed: int | None = None,
            k: int | None = None):
  """Deprecated name of ``load_model`` (kept for existing scripts; warns)."""
  import warnings

  warnings.warn("fdjax.restore is deprecated; use fdjax.load_model", DeprecationWarning,
                stacklevel=2)
  return load_model(workdir, method, seed, k)
