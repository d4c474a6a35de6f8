#!/usr/bin/env bash
# Run variants of one experiment side by side on one accelerator: every variant its own
# fdjax.main process (own workdir), all at once, each held to a share of the GPU's memory.
# Small models leave most of a large GPU idle: 8 concurrent :reduced runs of the
# three-task config took about 5 minutes on one H200 (BUILD_NOTES.md, "The :reduced
# recipe swept on one GPU"; one alone was not timed there). On a machine of several
# GPUs every variant sees all of them (set CUDA_VISIBLE_DEVICES to pick one).
#
#   launch/gpu_sweep.sh configs/restoration_3task.py:reduced runs/sweep \
#       launch/sweeps/restoration_3task_reduced.txt [--config.field=value ...]
#
# VARIANTS: one variant per line, "NAME [--config.field=value ...]" ('#' at the start
# of a line or after a space starts a comment; words are split on spaces, quotes are
# not read: a value holds no space); each NAME once; the flags after VARIANTS apply to
# every variant. Each variant writes
# WORKROOT/NAME (resumable as any run) and WORKROOT/NAME.log; at the end the script
# prints each variant's results table rows, or its exit status and log when it failed
# (a results.md left by an earlier run is never taken for this one's), and exits 1
# when any variant failed. Ctrl-C stops every running variant (each saves the step it
# reached), starts no other, and still prints the summary.
# Environment: FDJAX_SWEEP_PARALLEL (variants at once, default all), FDJAX_SWEEP_MEM
# (each process's share of GPU memory, default 0.9 / that number), FDJAX_SWEEP_TIMEOUT
# (seconds per variant, default none; timeout's SIGTERM makes a variant save the step
# it reached and exit 75, and running the sweep again resumes it), FDJAX_SWEEP_PRECISION
# (jax_default_matmul_precision, default 'highest': float32 convolutions, no TF32, so
# results are comparable with a CPU run's).
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 CONFIG WORKROOT VARIANTS [--config.field=value ...]" >&2
  exit 2
fi
# CONFIG, WORKROOT and VARIANTS relative to where the script is run (it then works in
# the checkout).
here="$PWD"
absolute() { if [[ "$1" == /* ]]; then printf '%s' "$1"; else printf '%s/%s' "$here" "$1"; fi; }
config="$(absolute "$1")"; root="$(absolute "$2")"; variants="$(absolute "$3")"; shift 3
cd "$(dirname "$0")/.."
# fdjax's dependencies, not the package: in the checkout 'import fdjax' always works
python -c "import fdjax.main" 2>/dev/null || python -m pip install -e .
if [[ ! -f "$variants" ]]; then
  echo "error: the variants file $variants does not exist" >&2
  exit 2
fi
# a comment: '#' at the start of a line or after a space ('c#d' is a value)
mapfile -t lines < <(sed -e 's/^#.*//' -e 's/[[:space:]]#.*//' -e '/^[[:space:]]*$/d' "$variants")
if [[ ${#lines[@]} -eq 0 ]]; then
  echo "$variants holds no variant" >&2
  exit 2
fi
# one workdir, log and status file per variant: a name used twice would share them
declare -A seen=()
for line in "${lines[@]}"; do
  read -r -a words <<< "$line"
  name="${words[0]}"
  if [[ -n "${seen[$name]:-}" || "$name" == */* || "$name" == .* || "$name" == -* ]]; then
    echo "$variants: variant name '$name' is used twice, or is not a plain folder name" >&2
    exit 2
  fi
  seen[$name]=1
done
parallel="${FDJAX_SWEEP_PARALLEL:-${#lines[@]}}"
if ! [[ "$parallel" =~ ^[1-9][0-9]*$ ]]; then
  echo "FDJAX_SWEEP_PARALLEL must be an integer >= 1, got '$parallel'" >&2
  exit 2
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# XLA_CLIENT_MEM_FRACTION: jaxlib refuses it beside the deprecated XLA_PYTHON_ name
unset XLA_PYTHON_CLIENT_MEM_FRACTION
export XLA_CLIENT_MEM_FRACTION="${FDJAX_SWEEP_MEM:-$(python -c "print(round(0.9 / $parallel, 3))")}"
export JAX_DEFAULT_MATMUL_PRECISION="${FDJAX_SWEEP_PRECISION:-highest}"
limit=()
# --foreground: timeout would move each variant into a process group of its own, which
# a Ctrl-C never reaches (the variants ran on, orphaned, holding the GPU)
# (--preserve-status: a variant its time limit stopped exits 75, resumable, not 124)
[[ -n "${FDJAX_SWEEP_TIMEOUT:-}" ]] && limit=(timeout --foreground --preserve-status "$FDJAX_SWEEP_TIMEOUT")
mkdir -p "$root"
names=()
# Ctrl-C reaches the running variants from the terminal; the script itself only stops
# starting new ones (with fewer slots than variants it used to start the next at once).
stopping=0
trap 'stopping=1' INT
for line in "${lines[@]}"; do
  while [[ $(jobs -rp | wc -l) -ge $parallel ]]; do wait -n || true; done
  if [[ "$stopping" == 1 ]]; then
    echo "Ctrl-C: not starting ${line%% *} and the variants after it"
    break
  fi
  read -r -a words <<< "$line"
  name="${words[0]}"; names+=("$name")
  rm -f "$root/$name.status"
  # each variant's exit status in WORKROOT/NAME.status (wait -n above loses them)
  ( set +e
    "${limit[@]}" python -m fdjax.main --config="$config" --workdir="$root/$name" "$@" \
        "${words[@]:1}" > "$root/$name.log" 2>&1
    echo $? > "$root/$name.status" ) &
  echo "started $name: ${words[*]:1}"
done
while [[ -n "$(jobs -rp)" ]]; do wait || true; done   # a trapped Ctrl-C ends one wait
status=0
[[ "$stopping" == 1 ]] && status=1
for name in "${names[@]}"; do
  code="$(cat "$root/$name.status" 2>/dev/null || echo '?')"
  if [[ "$code" == 0 && -f "$root/$name/results.md" ]]; then
    echo "== $name: $root/$name/results.md"
    grep -E '^\| [A-Z]' "$root/$name/results.md" | grep -v '^| method' || true
  else
    echo "== $name: failed (exit $code; 75: stopped, run the sweep again to resume): see" \
         "$root/$name.log"
    status=1
  fi
done
exit $status
