"""Apply a finished run's model to your own images.

    python -m fdjax.apply --run=runs/restoration --method=fusiondistill \\
        --input=my_photos/ --output=restored/

Restoration runs: every image of ``--input`` (a folder, not searched recursively, or
one image file; png/jpg/jpeg/bmp/...) is restored at its own size and written to
``--output`` as a PNG of the same name (``photo.jpg`` -> ``photo.png``); a one-channel
(greyscale) file comes back one channel, the restored image's full-range BT.601 luma
(what scoring on Y takes of it: ``fdjax.eval.image_quality``). Images larger
than ``--max_pixels`` run as overlapping tiles (``--tile``, ``--overlap``);
``--self_ensemble=2`` averages each image's result with its mirror image's and ``=8``
over its 8 flips and rotations (``fdjax.eval.self_ensemble``; that many times the time).
Classification runs: the images are resized (bicubic) to the run's image size when they
differ, and ``--output`` gets ``predictions.csv`` (file, class, label) instead (or the
CSV is written to ``--output`` itself when it ends in ``.csv``).

One line per image (its size and seconds; the first image of each size includes its
compilation), then where
the files are. Errors you can fix (no such run, a model the run lacks or has not
finished) print one line and exit 2; ``--verbosity=1`` adds the traceback and the
libraries' log lines. An image that cannot be read (a truncated or corrupt file) is
skipped with a line saying why, the others are still processed, and the command then
exits 2 with a last line naming the skipped files, so a script notices.
``fdjax.predictor.load_predictor`` is the same from code.
"""

from __future__ import annotations

import csv
import os
import time

from absl import app, flags

from fdjax.console import start_cli
from fdjax.errors import ConfigError, DataError, MissingDataError, UserError, cli_errors
from fdjax.image_files import grey_uint8, read_image_file

_RUN = flags.DEFINE_string("run", None, "The --workdir of a finished python -m fdjax.main run.")
_METHOD = flags.DEFINE_string("method", "fusiondistill",
                              "Model of the run: fusiondistill, fusiondistill_moe, clean, "
                              "expert_<degradation>, modelsoups, fusing, vanilla, scratch, ... "
                              "or its row in results.md ('FusionDistill-MoE (K=1)').")
_INPUT = flags.DEFINE_string("input", None, "A folder of images, or one image file.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the results (created if needed).")
_SEED = flags.DEFINE_integer("seed", None, "Seed of the run to use (default: its smallest).")
_K = flags.DEFINE_integer("k", None, "Top-K routing of fusiondistill_moe (default: trained K).")
_MAX_PIXELS = flags.DEFINE_integer("max_pixels", 1 << 20,
                                   "Restoration: tile images with more pixels (0: never).")
_TILE = flags.DEFINE_integer("tile", 512, "Restoration: tile side in pixels.")
_OVERLAP = flags.DEFINE_integer("overlap", 64, "Restoration: overlap of adjacent tiles.")
_SELF_ENSEMBLE = flags.DEFINE_integer(
    "self_ensemble", 0, "Restoration: 2 = the mean of each image's result and its mirror "
    "image's, 8 = over its 8 flips/rotations (that many times the time; as a run with "
    "config.eval.self_ensemble scores it); 0 = none.")


def list_images(path: str, echo=None) -> list[str]:
  """The image files of folder ``path`` (sorted by name; hidden files such as macOS's
  ``._name`` sidecars left out) whose extension the data layer reads
  (``fdjax.data.folder.IMAGE_EXTENSIONS``), or ``[path]`` for one file. The other
  entries (sub-folders, which are not searched, and files of other types) are named in
  one line via ``echo`` and in the error when there is no image."""
  from fdjax.data.folder import IMAGE_EXTENSIONS

  extensions = tuple(sorted(IMAGE_EXTENSIONS))
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise MissingDataError(f"--input {path} does not exist")
  visible = sorted(f for f in os.listdir(path) if not f.startswith("."))
  files = [os.path.join(path, f) for f in visible
           if f.lower().endswith(extensions) and os.path.isfile(os.path.join(path, f))]
  found = set(files)
  others = [f + ("/" if os.path.isdir(os.path.join(path, f)) else "") for f in visible
            if os.path.join(path, f) not in found]
  left_out = (f"{len(others)} entr{'y' if len(others) == 1 else 'ies'} left out (sub-folders "
              f"are not searched; other file types are not read): {', '.join(others[:5])}"
              + (", ..." if len(others) > 5 else "")) if others else ""
  if not files:
    raise DataError(f"no images in {path} (looked for {', '.join(extensions)})"
                    + (f"; {left_out}" if left_out else ""))
  if left_out and echo is not None:
    echo(left_out)
  return files


def output_names(files: list[str]) -> list[str]:
  """``<stem>.png`` per file; DataError when two files share a stem, in any case (file
  systems that ignore case would write both to one file)."""
  names = [os.path.splitext(os.path.basename(f))[0] + ".png" for f in files]
  seen: dict[str, tuple[str, str]] = {}
  for f, name in zip(files, names):
    if name.casefold() in seen:
      first, first_name = seen[name.casefold()]
      case = (" (names differing only in case are one file on some systems)"
              if first_name != name else "")
      raise DataError(f"{first} and {f} would both be written as {name}{case}; rename one")
    seen[name.casefold()] = (f, name)
  return names


def _output_folder(output: str) -> None:
  """Creates ``output``; a UserError when it is an existing file or cannot be made."""
  if os.path.exists(output) and not os.path.isdir(output):
    raise UserError(f"--output {output} is a file; give a folder")
  try:
    os.makedirs(output, exist_ok=True)
  except OSError as e:
    raise UserError(f"cannot create the --output folder {output}: {e}") from None


class UnreadableImagesError(DataError):
  """Some input images could not be read; the others were processed (``written``)."""

  def __init__(self, skipped: list[str], total: int, written: list[str]):
    names = ", ".join(os.path.basename(f) for f in skipped)
    super().__init__(f"{len(skipped)} of {total} image(s) could not be read and were "
                     f"skipped: {names}")
    self.skipped = skipped
    self.written = written


def readable_images(files: list[str], skipped: list[str], echo=print, size=None):
  """``(index, file, image, facts)`` for each of ``files`` that ``read_image_file`` can
  read (at ``size``); each one it cannot is appended to ``skipped`` with a line via
  ``echo``."""
  for i, f in enumerate(files):
    try:
      image, facts = read_image_file(f, size)
    except DataError as e:
      echo(f"{os.path.basename(f)}  skipped: {e}")
      skipped.append(f)
      continue
    yield i, f, image, facts


def _same_folder(a: str, b: str) -> bool:
  """Whether paths ``a`` and ``b`` name one folder: through links, and on file systems
  that ignore case (the same inode), not only as equal strings."""
  if os.path.realpath(a) == os.path.realpath(b):
    return True
  try:
    return os.path.samefile(a, b)
  except OSError:   # b does not exist yet
    return False


def _check_output(files: list[str], output: str) -> None:
  """UserError when folder ``output`` holds one of the input ``files``."""
  if any(_same_folder(os.path.dirname(f) or ".", output) for f in files):
    raise UserError(f"--output {output} holds the input images; choose another folder")


def restore_files(predict, files: list[str], output: str, echo=print) -> list[str]:
  """Restores ``files`` with ``predict`` (uint8 image -> uint8 image) into PNGs in
  ``output``; one line per image via ``echo``. Returns the written paths; when some
  images cannot be read, raises ``UnreadableImagesError`` after the others are written."""
  from PIL import Image

  _check_output(files, output)
  names = output_names(files)   # before the folder is made: a clash leaves nothing behind
  _output_folder(output)
  written, skipped = [], []
  for i, f, image, (profile, frames, grey) in readable_images(files, skipped, echo):
    name = names[i]
    start = time.perf_counter()
    restored = predict(image)
    seconds = time.perf_counter() - start
    if grey:   # a one-channel photo comes back one channel
      restored = grey_uint8(restored)
    path = os.path.join(output, name)
    try:   # the input's colour profile kept: a Display P3 photo stays Display P3
      Image.fromarray(restored).save(path, **({"icc_profile": profile} if profile else {}))
    except OSError as e:
      raise UserError(f"cannot write {path}: {e}") from None
    written.append(path)
    echo(f"{os.path.basename(f)}  {image.shape[1]}x{image.shape[0]}  {seconds:.2f} s"
         + (f"  (its first frame of {frames})" if frames > 1 else ""))
  if skipped:
    raise UnreadableImagesError(skipped, len(files), written)
  return written


def classify_files(predictor, files: list[str], output: str, echo=print) -> str:
  """Classifies ``files`` into a CSV (file, class, label); returns its path. Unreadable
  images are left out of the CSV and then raise ``UnreadableImagesError``."""
  shape = tuple(predictor.loaded.run_info["image_shape"])
  names = predictor.class_names
  path = output if output.lower().endswith(".csv") else os.path.join(output, "predictions.csv")
  _output_folder(os.path.dirname(path) or ".")
  skipped = []
  try:
    handle = open(path, "w", newline="")
  except OSError as e:
    raise UserError(f"cannot write {path}: {e}") from None
  with handle:
    writer = csv.writer(handle)
    writer.writerow(["file", "class", "label"])
    for _, f, image, _ in readable_images(files, skipped, echo, shape[:2]):
      start = time.perf_counter()
      label = predictor(image)
      seconds = time.perf_counter() - start
      writer.writerow([os.path.basename(f), label, names[label] if label < len(names) else ""])
      echo(f"{os.path.basename(f)}  class {label}  {seconds:.2f} s")
  if skipped:
    raise UnreadableImagesError(skipped, len(files), [path])
  return path


def apply_run(run: str, method: str, input_path: str, output: str, *, seed=None, k=None,
              tiling=None, self_ensemble: int = 0, echo=print) -> list[str]:
  """What the command does (module docstring); returns the paths written."""
  from fdjax.predictor import Tiling, load_predictor

  files = list_images(input_path, echo)
  predictor = load_predictor(run, method, seed, k=k,
                             tiling=Tiling() if tiling is None else tiling,
                             self_ensemble=self_ensemble)
  where = (f"run {run}, model {method} (seed {predictor.loaded.seed})"
           + (f", x{self_ensemble} self-ensemble" if self_ensemble else ""))
  restoring = predictor.kind == "image"
  if restoring:
    _check_output(files, output)   # before the line that says it starts
  echo(f"{'Restoring' if restoring else 'Classifying'} {len(files)} image(s) with {where}")
  unreadable = None
  try:
    written = (restore_files(predictor, files, output, echo) if restoring
               else [classify_files(predictor, files, output, echo)])
  except UnreadableImagesError as e:   # the readable ones are written: say where first
    written, unreadable = e.written, e
  echo(f"Wrote {len(written)} PNG(s) to {output}" if restoring
       else f"Wrote predictions to {written[0]}")
  if unreadable is not None:
    raise unreadable
  return written


def main(argv):
  """The command line (module docstring): ``--input``'s images, restored or classified, into
  ``--output``."""
  verbosity = start_cli(argv, flags, quoted="--method='Vanilla FT'")
  from PIL import Image

  from fdjax.load import ModelNotInRunError
  from fdjax.predictor import Tiling

  # The user's own files, tiled above --max_pixels: no decompression-bomb limit (PIL's
  # default refuses images over about 179 megapixels).
  Image.MAX_IMAGE_PIXELS = None

  with cli_errors(verbosity):
    missing = [f"--{f.name}" for f in (_RUN, _INPUT, _OUTPUT) if f.value is None]
    if missing:
      raise UserError(f"missing {', '.join(missing)}; usage: python -m fdjax.apply "
                      "--run=<workdir> --method=<model> --input=<folder or image> "
                      "--output=<folder>")
    try:   # Tiling's own check, told in the command's flags
      tiling = Tiling(max_pixels=_MAX_PIXELS.value, tile=_TILE.value, overlap=_OVERLAP.value)
    except ConfigError:
      raise UserError(f"tiling needs --max_pixels >= 0 (0: never), --tile >= 1 and "
                      f"0 <= --overlap < --tile, got --max_pixels={_MAX_PIXELS.value} "
                      f"--tile={_TILE.value} --overlap={_OVERLAP.value}") from None
    run, input_path, output = (os.path.expanduser(f.value) for f in (_RUN, _INPUT, _OUTPUT))
    try:
      apply_run(run, _METHOD.value, input_path, output, seed=_SEED.value,
                k=_K.value, tiling=tiling, self_ensemble=_SELF_ENSEMBLE.value)
    except ModelNotInRunError as e:
      if _METHOD.present:
        raise
      # --method left out: the run lacks the default, not a model the user asked for
      raise ModelNotInRunError(f"{e} (--method defaults to {_METHOD.default})",
                               hint="choose one of its finished models with --method=<model>"
                               ) from None


if __name__ == "__main__":
  from fdjax import cpu_flags

  cpu_flags.apply_defaults()   # before JAX starts (fdjax.cpu_flags)
  from fdjax.errors import parse_flags_or_exit

  app.run(main, flags_parser=parse_flags_or_exit)
