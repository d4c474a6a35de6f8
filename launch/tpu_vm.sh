#!/usr/bin/env bash
# Create a Cloud TPU VM, install fdjax on every host and run an experiment with the same flags.
#
#   TPU_NAME=fdjax-v4 ZONE=us-central2-b ACCELERATOR=v4-8 \
#   launch/tpu_vm.sh configs/cifar10_resnet56.py gs://BUCKET/runs/c10 --config.data.data_dir=gs://BUCKET/tfds
#
# The workdir should be a gs:// path (orbax and TFDS read and write GCS) so that
# checkpoints survive the VM; re-running the same command resumes.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config="$1"; workdir="$2"; shift 2
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
ACCELERATOR="${ACCELERATOR:-v4-8}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
REPO_URL="${REPO_URL:-$(git config --get remote.origin.url || true)}"
BRANCH="${BRANCH:-main}"

if ! gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" >/dev/null 2>&1; then
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" \
    --accelerator-type "$ACCELERATOR" --version "$RUNTIME"
fi

extra=$(printf ' %q' "$@")
remote="set -e
if [ ! -d fdjax ]; then git clone --branch $BRANCH $REPO_URL fdjax; fi
cd fdjax && git pull --ff-only
python3 -m pip install -q -U pip 'jax[tpu]'
python3 -m pip install -q -e .
python3 -m fdjax.main --config=$config --workdir=$workdir$extra"
# --worker=all runs the same command on every host. Single-host slices (v4-8, v5e-8) are
# supported; multi-host slices need host-local batch loading (see BUILD_NOTES.md).
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$remote"
