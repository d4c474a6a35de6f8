"""The restoration task's config block: ``config.restoration``'s fields and their defaults
(``DEFAULTS``), the models it names (``MODELS``), their shape fields and the model's own
options (``restoration.model_options``), each checked with a ``ConfigError``."""

from __future__ import annotations

import ast
import dataclasses

from fdjax.errors import ConfigError
from fdjax.models import MEASNet, NAFNet, PromptIR, UNet
from fdjax.tasks.base import DTYPES

# ``restoration.model`` -> its Flax module. A new backbone is an entry here: a subclass of
# ``fdjax.models.unet.UNetShape`` (its shape fields, which the config fills, ``stride``,
# ``pools_globally`` and ``feature_names``), called as ``model(x, train=...)`` on
# ``[B, H, W, 3 or 4]`` float images in 0..1 and returning ``(image, features)`` with
# every key of ``feature_names``.
MODELS = {"unet": UNet, "nafnet": NAFNet, "promptir": PromptIR, "measnet": MEASNet}
DEFAULTS = {"model": "unet", "width": 16, "depth": 2, "blocks": 1, "middle_blocks": 1,
            "decoder_blocks": None, "dtype": "float32", "patch": 64, "flip": True,
            "rot90": True, "y_channel": False, "shave": 0, "loss": "l1",
            "model_options": "", "extra_metrics": "", "image_prior": "none",
            "prior_context": "patch", "cue_jitter": 0.0, "rotate_real": False}
LOSSES = ("l1", "charbonnier")


def options(config) -> dict:
  """``DEFAULTS`` updated with the fields of ``config.restoration`` (when present)."""
  block = config.get("restoration") if hasattr(config, "get") else None
  found = dict(DEFAULTS)
  if block is not None:
    unknown = sorted(set(block.keys()) - set(DEFAULTS))
    if unknown:
      raise ConfigError(f"unknown config.restoration fields {unknown}; known: {sorted(DEFAULTS)}")
    found.update({k: block.get(k) for k in block.keys()})
  return found


def shape_fields(o: dict) -> dict:
  """The ``UNetShape`` fields (width, depth, blocks, ..., dtype) of ``options`` ``o``."""
  if o["dtype"] not in DTYPES:
    raise ConfigError(f"restoration.dtype must be one of {sorted(DTYPES)}, got {o['dtype']!r}")
  as_blocks = lambda b: b if b is None or isinstance(b, int) else tuple(int(x) for x in b)
  return dict(width=int(o["width"]), depth=int(o["depth"]), blocks=as_blocks(o["blocks"]),
              middle_blocks=int(o["middle_blocks"]),
              decoder_blocks=as_blocks(o["decoder_blocks"] or None),  # 0 in configs = None
              dtype=DTYPES[o["dtype"]], image_prior=str(o["image_prior"]))


def parse_model_options(value) -> dict:
  """``restoration.model_options`` as a dict: ``'num_experts=3,k=2'`` (each value a
  Python literal: a number, True / False, a quoted string) or a mapping; '', 0 or None:
  none. A malformed string is a ``ConfigError``."""
  if not value:
    return {}
  if not isinstance(value, str):
    return dict(value)
  out = {}
  for item in (part.strip() for part in value.split(",") if part.strip()):
    name, eq, text = (x.strip() for x in item.partition("="))
    try:
      if not (eq and name.isidentifier()):
        raise ValueError
      out[name] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      raise ConfigError(f"restoration.model_options must be 'name=value,...' with Python "
                        f"literal values (e.g. 'num_experts=3,k=2'), got {value!r}") from None
  return out


def model_options(o: dict) -> dict:
  """``restoration.model_options`` checked against the fields of ``restoration.model``'s
  class (the shape fields excluded: they have their own config fields)."""
  if o["model"] not in MODELS:
    raise ConfigError(f"restoration.model must be one of {sorted(MODELS)}, got {o['model']!r}")
  extra = parse_model_options(o["model_options"])
  cls = MODELS[o["model"]]
  fields = {f.name for f in dataclasses.fields(cls)} - {f.name for f in
                                                         dataclasses.fields(UNet)}
  unknown = sorted(set(extra) - fields)
  if unknown:
    raise ConfigError(f"restoration.model_options {unknown} are not fields of "
                      f"{cls.__name__}; known: {sorted(fields)}")
  types = {f.name: f.type for f in dataclasses.fields(cls)}
  for name, value in extra.items():
    # Every int field of these models is a count or a size (experts, K, widths,
    # prompts): 0 built zero-width layers silently on JAX >= 0.11.2, whose
    # initialisers stopped dividing by the width.
    if types[name] in ("int", int) and (isinstance(value, bool) or not isinstance(value, int)
                                        or value < 1):
      raise ConfigError(f"restoration.model_options.{name} must be an integer >= 1, got "
                        f"{value!r}")
  return extra
