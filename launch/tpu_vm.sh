#!/usr/bin/env bash
# Create (or reuse) a Cloud TPU VM, single-host or a multi-host slice, install fdjax on
# every host and run the same fdjax.main command on all of them at once.
#
#   TPU_NAME=fdjax-v4 ZONE=us-central2-b ACCELERATOR=v4-32 \
#   SETUP='mountpoint -q /mnt/runs || (sudo mkdir -p /mnt/runs && sudo chown $USER /mnt/runs && gcsfuse --implicit-dirs --rename-dir-limit=200000 BUCKET /mnt/runs)' \
#   launch/tpu_vm.sh configs/cifar10_resnet56.py /mnt/runs/c10 --config.data.data_dir=gs://BUCKET/tfds
#
# The flags after WORKDIR are those of a local run (launch/local.sh). On a multi-host
# slice (v4-16 and up, v5litepod-16 and up) every worker runs fdjax.main; fdjax.distributed
# finds the slice's hosts itself (jax.distributed.initialize on a Cloud TPU VM), each
# host loads the data set and batches only its own rows of every global batch,
# checkpoints are written collectively and worker 0 prints the progress and writes the
# tables. The workdir (absolute, or relative to the checkout ~/fdjax on each worker)
# must be a folder every worker sees at the same path, e.g. a bucket mounted
# with gcsfuse (--rename-dir-limit: orbax and fdjax rename folders, which gcsfuse refuses
# in a bucket without hierarchical namespace unless it is set) or a Filestore share
# mounted by SETUP; fdjax refuses one that is not shared. A mounted bucket also keeps the checkpoints past the VM; re-running resumes.
# A maintenance event or a spot VM's preemption (SIGTERM on any worker) makes every
# worker save the same step and exit 75 (fdjax.train.stop): nothing trained is lost.
# The workers run inside this script's ssh session: a worker that a dropped connection
# hangs up (SIGHUP) saves the step agreed with the others and exits 75, as on SIGTERM
# (fdjax.train.stop); one that is not hung up but has lost its console logs nothing more
# and goes on. Run the script from tmux or screen on a machine that stays up to follow
# the run, and re-run it to resume.
# (fdjax writes its files with plain file I/O: a gs:// URL is not a workdir; the TFDS
# data dir may be one: when a flag names a gs:// path, each worker also installs gcsfs,
# which TFDS reads buckets through, and tensorflow-cpu, which reads TFDS's tfrecord
# files; a data set prepared with file_format='array_record' needs no tensorflow.)
# SETUP's gcsfuse must be on the image (install it there first if it is not). Each
# worker checks out BRANCH from REPO_URL (push the work first) and upgrades jax[tpu]:
# a resumed run may meet a newer JAX than the one that wrote its checkpoints.
#
# Environment: TPU_NAME, ZONE (required); ACCELERATOR (default v4-8), RUNTIME (VM image,
# default the accelerator's: v2-alpha-tpuv5-lite for v5litepod-*, v2-alpha-tpuv5 for
# v5p-*, v2-alpha-tpuv6e for v6e-*, tpu-ubuntu2204-base for v4 and earlier), REPO_URL / BRANCH (what to install, default this
# checkout's origin and main), SETUP (a shell command run on every worker first, e.g.
# mounting the workdir), CREATE_ONLY=1 (create the VM and stop), PYTHON_VERSION (default
# 3.11: fdjax needs >= 3.11 and the image's python3 is 3.10, so each worker runs fdjax in
# its own virtualenv ~/fdjax-venv, made by uv with a Python of that version).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config="$1"; workdir="$2"; shift 2
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
if [[ "$workdir" == gs://* ]]; then   # before a VM is created (and billed)
  echo "error: WORKDIR must be a folder every worker sees (mount the bucket with gcsfuse in" \
       "SETUP), not a gs:// URL" >&2
  exit 2
fi
ACCELERATOR="${ACCELERATOR:-v4-8}"
case "$ACCELERATOR" in   # Cloud TPU's runtime table: each generation its own image
  v5litepod-*) default_runtime=v2-alpha-tpuv5-lite ;;
  v5p-*) default_runtime=v2-alpha-tpuv5 ;;
  v6e-*) default_runtime=v2-alpha-tpuv6e ;;
  *) default_runtime=tpu-ubuntu2204-base ;;
esac
RUNTIME="${RUNTIME:-$default_runtime}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
REPO_URL="${REPO_URL:-$(git config --get remote.origin.url || true)}"
BRANCH="${BRANCH:-main}"
: "${REPO_URL:?set REPO_URL (no git remote 'origin' here)}"

if gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" >/dev/null 2>&1; then
  echo "reusing TPU VM $TPU_NAME ($ZONE)" >&2
else
  gcloud compute tpus tpu-vm create "$TPU_NAME" --zone "$ZONE" \
    --accelerator-type "$ACCELERATOR" --version "$RUNTIME"
fi
[[ -n "${CREATE_ONLY:-}" ]] && exit 0

extra=""   # printf ' %q' with no arguments prints ' ' + "''": a stray empty argument
if (($#)); then extra=$(printf ' %q' "$@"); fi
buckets=""   # a gs:// data dir: TFDS reads it through gcsfs, its tfrecords through TF
if [[ "$*" == *gs://* ]]; then buckets="gcsfs tensorflow-cpu"; fi
# One step a line: `set -e` does not stop at a failure before the last `&&` of a list, so
# a worker whose fetch failed would run its old checkout beside the others' new one.
remote="set -e
${SETUP:-true}
if [ ! -d fdjax ]; then git clone --branch $(printf %q "$BRANCH") $(printf %q "$REPO_URL") fdjax; fi
cd fdjax
git fetch -q
git checkout -q $(printf %q "$BRANCH")
git pull -q --ff-only
if [ ! -x ~/fdjax-venv/bin/python ]; then
  python3 -m pip install -q --user -U uv
  python3 -m uv venv -q --seed --python $(printf %q "$PYTHON_VERSION") ~/fdjax-venv
fi
~/fdjax-venv/bin/python -m pip install -q -U pip 'jax[tpu]' $buckets
~/fdjax-venv/bin/python -m pip install -q -e .
~/fdjax-venv/bin/python -m fdjax.main --config=$(printf %q "$config") --workdir=$(printf %q "$workdir")$extra"
# --worker=all: the same command on every host, at the same time (JAX's multi-controller
# model); they meet in jax.distributed.initialize. Worker 0's console is the one to read.
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$remote"
