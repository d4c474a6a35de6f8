#!/usr/bin/env bash
# Run an fdjax experiment on this machine (CPU, GPU or simulated devices).
#
#   launch/local.sh configs/quickstart.py runs/quickstart [--config.clean.epochs=3 ...]
#   FDJAX_SIM_DEVICES=8 launch/local.sh configs/quickstart.py runs/q8   # 8 simulated CPU devices
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config="$1"; workdir="$2"; shift 2
cd "$(dirname "$0")/.."
python -c "import fdjax" 2>/dev/null || python -m pip install -e .
if [[ -n "${FDJAX_SIM_DEVICES:-}" ]]; then
  export XLA_FLAGS="--xla_force_host_platform_device_count=${FDJAX_SIM_DEVICES} ${XLA_FLAGS:-}"
  export JAX_PLATFORMS=cpu
fi
mkdir -p "$workdir"
exec python -m fdjax.main --config="$config" --workdir="$workdir" "$@" 2>&1 | tee -a "$workdir/log.txt"
