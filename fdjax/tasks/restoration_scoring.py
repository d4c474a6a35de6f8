"""Per-task scoring space of restoration: RGB or the BT.601 Y channel, and a shaved border.

The field's tables score each task its own way: deraining tables (PReNet, MPRNet)
report PSNR/SSIM on the Y channel (Rain100L), denoising and dehazing tables on RGB (the
all-in-one papers' public code, PromptIR's and AirNet's, scores every task on RGB,
deraining too); super-resolution on Y with a border of ``scale`` pixels shaved. A restoration
study sets the default for every task (and for the clean column and validation-based
model selection) with ``config.restoration.y_channel`` / ``config.restoration.shave``,
and overrides it per degradation with the per-degradation block ``config.scoring``
(declared by ``fdjax.config_restoration``, one field per degradation, as
``config.eval_levels``)::

    config.scoring.rain = 'y'              # rain scored on Y (shave: the default)
    config.scoring.haze = 'rgb,shave=4'    # haze on RGB with 4 border pixels dropped
    config.scoring.denoise = ''            # the restoration block's default

A value is a comma list of at most one space (``'y'`` or ``'rgb'``) and at most one
``shave=<pixels>``; what it leaves out comes from the default. A degradation that the
study does not evaluate (not in ``config.degradations``) is an error.
"""

from __future__ import annotations

from fdjax.config import parse_list
from fdjax.errors import ConfigError

SPACES = {"y": True, "rgb": False}

# ((degradation, y_channel, shave), ...): hashable, kept in a frozen task.
Overrides = tuple[tuple[str, bool, int], ...]


def parse_setting(name: str, text: str, y_channel: bool, shave: int) -> tuple[bool, int]:
  """``(y_channel, shave)`` of ``config.scoring.<name> = text`` over the defaults."""
  space = pixels = None
  for part in parse_list(text.lower()):
    key, eq, value = (s.strip() for s in part.partition("="))
    if part in SPACES and space is None:
      space = SPACES[part]
    elif key == "shave" and eq and value.isdigit() and pixels is None:
      pixels = int(value)
    else:
      raise ConfigError(f"scoring.{name} = {text!r}: {part!r} is not a setting; use 'y' or "
                        f"'rgb' and/or 'shave=<pixels>' (at most one of each), e.g. "
                        f"'y,shave=4'")
  return (y_channel if space is None else space), (shave if pixels is None else pixels)


def overrides(config, y_channel: bool, shave: int) -> Overrides:
  """The per-degradation settings of ``config.scoring`` (non-empty fields only), each
  ``(name, y_channel, shave)`` in ``config.degradations`` order. Raises ``ConfigError``
  for a malformed value or a degradation the study does not evaluate."""
  block = config.get("scoring") if hasattr(config, "get") else None
  if not block:
    return ()
  given = {name: str(text) for name, text in block.items() if str(text or "").strip()}
  names = parse_list(config.get("degradations", ""))
  unknown = sorted(set(given) - set(names))
  if unknown:
    raise ConfigError(f"config.scoring sets {unknown}, not evaluated by this study; "
                      f"config.degradations = {names}")
  return tuple((name, *parse_setting(name, given[name], y_channel, shave))
               for name in names if name in given)


def label(y_channel: bool, shave: int) -> str:
  """``'Y'``, ``'RGB'``, ``'Y, shave 4'``: how a column was scored."""
  return ("Y" if y_channel else "RGB") + (f", shave {shave}" if shave else "")


def labels(names, y_channel: bool, shave: int, per_task: Overrides) -> dict[str, str]:
  """``{'clean': label, name: label, ...}`` for the degradations ``names``, or ``{}`` when
  every column is scored the plain way (RGB, nothing shaved): results and reports then
  stay as they were before per-task scoring existed."""
  found = {n: (y, s) for n, y, s in per_task}
  settings = {"clean": (y_channel, shave),
              **{n: found.get(n, (y_channel, shave)) for n in names}}
  if not any(y or s for y, s in settings.values()):
    return {}
  return {n: label(*setting) for n, setting in settings.items()}
