"""fdjax's default XLA:CPU flags: convolutions in Eigen (multi-threaded) instead of YNNPACK.

On jaxlib 0.10, XLA:CPU hands each convolution to YNNPACK (``ynn_fusion`` in a
profile), whose convolutions use one core here: a training step of the restoration
U-Net runs about as fast on two cores as on one. With
``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`` convolutions go to
Eigen, which uses every core of XLA's thread pool (measured in BUILD_NOTES.md, "XLA:CPU
convolutions on two cores": the plain U-Net's step 1.4-1.6x faster on the 2-core CPU,
the same on one pinned core).

``apply_defaults()`` adds that flag to ``XLA_FLAGS`` when all of these hold:

* jaxlib is a version it was measured on (``TESTED_JAXLIB``: an unknown flag in
  ``XLA_FLAGS`` is a fatal error in XLA, and the flag is marked experimental);
* ``XLA_FLAGS`` does not already set ``--xla_cpu_experimental_ynn_fusion_type`` (a
  user's choice wins: ``=+individual_convolution`` keeps YNNPACK's convolutions);
* ``FDJAX_XLA_DEFAULTS`` is not ``0``;
* no accelerator plugin is installed (``libtpu``, a ``jax_plugins`` or ``jax_cuda*`` /
  ``jax_rocm*`` plugin), unless ``JAX_PLATFORMS`` is ``cpu``: the flag only concerns
  XLA:CPU, and a plugin parses ``XLA_FLAGS`` with its own copy of XLA (libtpu is built
  apart from jaxlib), which may not know an experimental flag and would abort;
* JAX's backends are not started yet (XLA reads ``XLA_FLAGS`` once, when they start).

The command lines call
it first (``python -m fdjax.main``, ``python -m fdjax.apply``, ``python -m fdjax.bench``);
code that imports fdjax as a library keeps XLA's defaults unless it calls
``apply_defaults()`` before using JAX.
"""

from __future__ import annotations

import importlib.util
import os
import pkgutil
import sys
from importlib import metadata

EIGEN_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
FLAG_NAME = EIGEN_CONVOLUTIONS.split("=")[0]
TESTED_JAXLIB = ((0, 10),)   # (major, minor) versions the flag was measured on
OPT_OUT_ENV = "FDJAX_XLA_DEFAULTS"


def jaxlib_minor(version: str | None) -> tuple[int, int] | None:
  """``(major, minor)`` of a version string such as ``"0.10.2"``; None for None or a
  string without two leading integers."""
  if version is None:
    return None
  parts = version.split(".")
  try:
    return int(parts[0]), int(parts[1])
  except (IndexError, ValueError):
    return None


def sets_flag(xla_flags: str, flag: str) -> bool:
  """Whether ``xla_flags`` (an ``XLA_FLAGS`` value) already sets ``flag``'s name (the part
  before any ``=``), to whatever value."""
  name = flag.split("=")[0]
  return any(token.split("=")[0] == name for token in xla_flags.split())


def default_flags(xla_flags: str, jaxlib_version: str | None, opt_out: str | None = None,
                  accelerator: bool = False) -> str:
  """``xla_flags`` with ``EIGEN_CONVOLUTIONS`` appended when the module docstring's
  conditions on the jaxlib version, the flags already given, the opt-out and an
  accelerator (``accelerator``: a plugin is installed and JAX may use it) hold;
  otherwise ``xla_flags`` unchanged. Pure: no environment read."""
  if opt_out == "0" or jaxlib_version is None or accelerator:
    return xla_flags
  if jaxlib_minor(jaxlib_version) not in TESTED_JAXLIB:
    return xla_flags
  if sets_flag(xla_flags, EIGEN_CONVOLUTIONS):
    return xla_flags
  return f"{xla_flags} {EIGEN_CONVOLUTIONS}".strip()


def _backends_started() -> bool:
  bridge = sys.modules.get("jax._src.xla_bridge")
  started = getattr(bridge, "backends_are_initialized", None)
  return bool(started()) if callable(started) else False


def installed_jaxlib() -> str | None:
  """The installed jaxlib's version string (None when jaxlib is not installed)."""
  try:
    return metadata.version("jaxlib")
  except metadata.PackageNotFoundError:
    return None


def _accelerator_plugins() -> list[str]:
  """The accelerator plugins JAX would load: ``libtpu``, ``jax_plugins.*`` and the
  ``jax_cuda*`` / ``jax_rocm*`` plugin modules that are installed (none on a CPU-only
  install)."""
  found = ["libtpu"] if importlib.util.find_spec("libtpu") is not None else []
  for module in pkgutil.iter_modules():
    if module.name.startswith(("jax_cuda", "jax_rocm")) and module.name.endswith("plugin"):
      found.append(module.name)
  try:
    import jax_plugins   # the namespace package of PJRT plugins (jax-cuda12-plugin's)
  except ImportError:
    return found
  return found + [f"jax_plugins.{m.name}" for m in pkgutil.iter_modules(jax_plugins.__path__)]


def accelerator_in_use(environ) -> bool:
  """Whether JAX may use an accelerator plugin: one is installed and ``environ``'s
  ``JAX_PLATFORMS`` is not ``cpu`` (its XLA, which may be built apart from jaxlib's,
  parses ``XLA_FLAGS`` too)."""
  return (environ.get("JAX_PLATFORMS", "").strip().lower() != "cpu"
          and bool(_accelerator_plugins()))


def apply_defaults(environ=None) -> bool:
  """Sets ``environ['XLA_FLAGS']`` (default ``os.environ``) to ``default_flags(...)``
  unless JAX's backends already started; returns whether it changed anything."""
  environ = os.environ if environ is None else environ
  if _backends_started():
    return False
  current = environ.get("XLA_FLAGS", "")
  accelerator = accelerator_in_use(environ)
  wanted = default_flags(current, installed_jaxlib(), environ.get(OPT_OUT_ENV), accelerator)
  if wanted == current:
    return False
  environ["XLA_FLAGS"] = wanted
  return True
