#!/usr/bin/env bash
# Run an fdjax experiment on this machine (CPU, GPU or simulated devices).
#
#   launch/local.sh configs/quickstart.py runs/quickstart [--config.clean.epochs=3 ...]
#   FDJAX_SIM_DEVICES=8 launch/local.sh configs/quickstart.py runs/q8   # 8 simulated CPU devices
#   FDJAX_PROCESSES=2 FDJAX_SIM_DEVICES=2 launch/local.sh configs/quickstart.py runs/q2x2
#       # 2 local processes x 2 simulated CPU devices on JAX's multi-controller runtime
#       # (what a multi-host run does; process 0's console is shown, the others' in
#       # WORKDIR/log.process<i>.txt, appended as log.txt is). Several local processes
#       # need FDJAX_SIM_DEVICES: nothing splits a machine's GPUs between them, and on
#       # a GPU machine one process drives every local GPU. Across hosts: README.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
# CONFIG and WORKDIR relative to where the script is run (it then works in the checkout).
here="$PWD"
absolute() { if [[ "$1" == /* ]]; then printf '%s' "$1"; else printf '%s/%s' "$here" "$1"; fi; }
config="$(absolute "$1")"; workdir="$(absolute "$2")"; shift 2
cd "$(dirname "$0")/.."
# fdjax's dependencies, not the package: in the checkout 'import fdjax' always works
python -c "import fdjax.main" 2>/dev/null || python -m pip install -e .
if [[ -n "${FDJAX_SIM_DEVICES:-}" ]]; then
  export XLA_FLAGS="--xla_force_host_platform_device_count=${FDJAX_SIM_DEVICES} ${XLA_FLAGS:-}"
  export JAX_PLATFORMS=cpu
fi
mkdir -p "$workdir"
processes="${FDJAX_PROCESSES:-1}"
if [[ "$processes" -gt 1 && -z "${FDJAX_SIM_DEVICES:-}" ]]; then
  echo "FDJAX_PROCESSES=$processes needs FDJAX_SIM_DEVICES (simulated CPU devices per" \
       "process): several local processes would each claim every GPU of this machine;" \
       "on a GPU machine run one process, which uses every local GPU" >&2
  exit 2
fi
if [[ "$processes" -le 1 ]]; then
  # tee -i: a Ctrl-C reaches fdjax (which saves the step in training and says so) and
  # leaves tee running to show and log those last lines. (No `exec`: in a pipeline it
  # replaces only the pipeline's subshell, and the script went on to start the run
  # again as one process of a multi-process run.)
  python -m fdjax.main --config="$config" --workdir="$workdir" "$@" 2>&1 | tee -ia "$workdir/log.txt"
  exit "${PIPESTATUS[0]}"
fi
port=$(python -c "import socket; s = socket.socket(); s.bind(('localhost', 0)); print(s.getsockname()[1])")
dist=(--coordinator_address="localhost:$port" --num_processes="$processes")
pids=()
for ((i = 1; i < processes; i++)); do
  python -m fdjax.main --config="$config" --workdir="$workdir" "${dist[@]}" --process_id="$i" "$@" \
    >> "$workdir/log.process$i.txt" 2>&1 &
  pids+=($!)
done
status=0
python -m fdjax.main --config="$config" --workdir="$workdir" "${dist[@]}" --process_id=0 "$@" 2>&1 \
  | tee -ia "$workdir/log.txt" || status=$?
# process 0's status, else the first other process's that failed (the others then abort)
for pid in "${pids[@]}"; do
  wait "$pid" || { code=$?; [[ "$status" -eq 0 ]] && status=$code; }
done
exit "$status"
