"""The launch scripts, with stand-ins for `python` and `gcloud` on PATH that record how
they are called: a one-process `launch/local.sh` starts fdjax.main once and exits with
its status; `launch/tpu_vm.sh` without extra flags sends a command with no stray
argument."""

import os
import pathlib
import shlex
import stat
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def stand_in(folder: pathlib.Path, name: str, body: str) -> None:
  path = folder / name
  path.write_text("#!/usr/bin/env bash\n" + body)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("status", [0, 3])
def test_a_one_process_local_run_starts_fdjax_once_and_exits_with_its_status(tmp_path, status):
  bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
  bin_dir.mkdir()
  # `python -c ...` (the import check, the free port) answers; `python -m fdjax.main`
  # records its arguments and exits with `status`.
  stand_in(bin_dir, "python", f"""
if [[ "$1" == "-c" ]]; then echo 12345; exit 0; fi
echo "$*" >> {shlex.quote(str(calls))}
exit {status}
""")
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
  env.pop("FDJAX_PROCESSES", None)
  run = subprocess.run(["bash", str(REPO / "launch" / "local.sh"), "configs/quickstart.py",
                        str(tmp_path / "wd"), "--config.clean.epochs=1"],
                       env=env, capture_output=True, text=True, timeout=60)
  assert run.returncode == status, run.stderr
  assert calls.read_text().splitlines() == [
      f"-m fdjax.main --config=configs/quickstart.py --workdir={tmp_path / 'wd'} "
      "--config.clean.epochs=1"]


@pytest.mark.parametrize("extra", [[], ["--config.clean.epochs=2", "--xla_cache=a b"]])
def test_tpu_vm_sends_exactly_the_flags_given(tmp_path, extra):
  bin_dir, calls = tmp_path / "bin", tmp_path / "ssh.txt"
  bin_dir.mkdir()
  # gcloud: `describe` succeeds (the VM exists); `ssh` writes its --command argument.
  stand_in(bin_dir, "gcloud", f"""
for arg in "$@"; do
  if [[ "$prev" == "--command" ]]; then printf '%s' "$arg" > {shlex.quote(str(calls))}; fi
  prev="$arg"
done
exit 0
""")
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", TPU_NAME="t", ZONE="z",
             REPO_URL="https://example.invalid/fdjax.git")
  run = subprocess.run(["bash", str(REPO / "launch" / "tpu_vm.sh"), "configs/quickstart.py",
                        "/mnt/runs/q", *extra], env=env, capture_output=True, text=True,
                       timeout=60)
  assert run.returncode == 0, run.stderr
  last = calls.read_text().splitlines()[-1]
  assert shlex.split(last) == ["python3", "-m", "fdjax.main", "--config=configs/quickstart.py",
                               "--workdir=/mnt/runs/q", *extra]
