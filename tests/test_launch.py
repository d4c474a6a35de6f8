"""The launch scripts, with stand-ins for `python` and `gcloud` on PATH that record how
they are called: a one-process `launch/local.sh` starts fdjax.main once and exits with
its status and reads relative paths from the caller's folder; `launch/tpu_vm.sh` without
extra flags sends a command with no stray argument, one step a line, and refuses a gs://
workdir before it creates a VM."""

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
  # Run from another folder with relative paths: they mean that folder's files (the
  # script then works in the checkout; they used to be read there).
  here = tmp_path / "here"
  here.mkdir()
  run = subprocess.run(["bash", str(REPO / "launch" / "local.sh"), "my_config.py:tiny", "wd",
                        "--config.clean.epochs=1"],
                       cwd=here, env=env, capture_output=True, text=True, timeout=60)
  assert run.returncode == status, run.stderr
  assert calls.read_text().splitlines() == [
      f"-m fdjax.main --config={here / 'my_config.py'}:tiny --workdir={here / 'wd'} "
      "--config.clean.epochs=1"]
  assert (here / "wd" / "log.txt").is_file()


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
  lines = calls.read_text().splitlines()
  assert shlex.split(lines[-1]) == ["~/fdjax-venv/bin/python", "-m", "fdjax.main",
                                    "--config=configs/quickstart.py", "--workdir=/mnt/runs/q",
                                    *extra]
  # One step a line: `set -e` skips a failure before the last `&&` of a list (a worker
  # whose `git fetch` failed ran its old checkout).
  assert not any("&&" in line for line in lines), lines


def test_tpu_vm_refuses_a_gs_workdir_before_creating_a_vm(tmp_path):
  bin_dir, calls = tmp_path / "bin", tmp_path / "gcloud.txt"
  bin_dir.mkdir()
  # gcloud: records every call; `describe` fails (no such VM yet).
  stand_in(bin_dir, "gcloud", f"""
echo "$*" >> {shlex.quote(str(calls))}
[[ "$4" == describe ]] && exit 1
exit 0
""")
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", TPU_NAME="t", ZONE="z",
             REPO_URL="https://example.invalid/fdjax.git")
  run = subprocess.run(["bash", str(REPO / "launch" / "tpu_vm.sh"), "configs/quickstart.py",
                        "gs://bucket/runs"], env=env, capture_output=True, text=True, timeout=60)
  assert run.returncode == 2 and "not a gs:// URL" in run.stderr
  assert not calls.exists(), calls.read_text()


def test_tpu_vm_picks_the_accelerator_s_runtime_and_reads_buckets(tmp_path):
  """v5e took v4's image (tpu-ubuntu2204-base); a gs:// TFDS data dir needed gcsfs and
  tensorflow, which no worker installed."""
  bin_dir, calls = tmp_path / "bin", tmp_path / "gcloud.txt"
  bin_dir.mkdir()
  stand_in(bin_dir, "gcloud", f"""
printf '%s\\n' "$*" >> {shlex.quote(str(calls))}
[[ "$4" == describe ]] && exit 1
exit 0
""")
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", TPU_NAME="t", ZONE="z",
             REPO_URL="https://example.invalid/fdjax.git", ACCELERATOR="v5litepod-16")
  run = subprocess.run(["bash", str(REPO / "launch" / "tpu_vm.sh"), "configs/quickstart.py",
                        "/mnt/runs/q", "--config.data.data_dir=gs://b/tfds"], env=env,
                       capture_output=True, text=True, timeout=60)
  assert run.returncode == 0, run.stderr
  text = calls.read_text()
  assert "--accelerator-type v5litepod-16 --version v2-alpha-tpuv5-lite" in text
  assert "'jax[tpu]' gcsfs tensorflow-cpu" in text


def test_several_local_processes_need_simulated_devices(tmp_path):
  """Nothing splits a machine's GPUs between local processes: each claimed them all."""
  env = {k: v for k, v in os.environ.items() if k != "FDJAX_SIM_DEVICES"}
  run = subprocess.run(["bash", str(REPO / "launch" / "local.sh"), "configs/quickstart.py",
                        str(tmp_path / "w")], env={**env, "FDJAX_PROCESSES": "2"},
                       capture_output=True, text=True, timeout=60)
  assert run.returncode == 2 and "needs FDJAX_SIM_DEVICES" in run.stderr


def test_gpu_sweep_reports_a_failed_rerun_not_the_old_table(tmp_path):
  """A variant that failed this time (a typo in its flags) was reported with the table an
  earlier run left, and the sweep exited 0."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  stand_in(bin_dir, "python", """
if [[ "$1" == "-c" ]]; then echo 0.45; exit 0; fi
for arg in "$@"; do [[ "$arg" == *epochz* ]] && exit 2; done
exit 0
""")
  (tmp_path / "variants.txt").write_text("A\nB --config.clean.epochz=1  # a typo\n")
  for name in ("A", "B"):   # both finished before
    (tmp_path / "root" / name).mkdir(parents=True)
    (tmp_path / "root" / name / "results.md").write_text("| Oracle | 1 | 90.0 |\n")
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
  run = subprocess.run(["bash", str(REPO / "launch" / "gpu_sweep.sh"), "configs/quickstart.py",
                        str(tmp_path / "root"), str(tmp_path / "variants.txt")], env=env,
                       capture_output=True, text=True, timeout=60)
  assert run.returncode == 1, run.stdout + run.stderr
  assert "== A: " in run.stdout and "| Oracle | 1 | 90.0 |" in run.stdout
  assert "== B: failed (exit 2" in run.stdout
  for parallel in ("0", "two"):   # looped forever
    run = subprocess.run(["bash", str(REPO / "launch" / "gpu_sweep.sh"), "c.py", "r",
                          str(tmp_path / "variants.txt")], cwd=tmp_path,
                         env={**env, "FDJAX_SWEEP_PARALLEL": parallel},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "must be an integer >= 1" in run.stderr
  run = subprocess.run(["bash", str(REPO / "launch" / "gpu_sweep.sh"), "c.py", "r", "none.txt"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
  assert (run.returncode, run.stderr) == (
      2, f"error: the variants file {tmp_path / 'none.txt'} does not exist\n")   # no sed line


def test_gpu_sweep_ctrl_c_stops_the_running_variant_and_starts_no_other(tmp_path):
  """With fewer slots than variants, a Ctrl-C stopped the running ones and the loop then
  started the next (the header said it stopped every variant)."""
  import signal
  import sys
  import time

  bin_dir, started = tmp_path / "bin", tmp_path / "started"
  bin_dir.mkdir()
  started.mkdir()
  # python: `-c` answers; a run marks itself started and, as fdjax.main does, turns a
  # Ctrl-C (re-enabled: bash starts background jobs with SIGINT ignored) into exit 75.
  (bin_dir / "python").write_text(f"""#!{sys.executable}
import os, signal, sys, time
if sys.argv[1] == "-c":
  print(0.45); sys.exit(0)
signal.signal(signal.SIGINT, lambda *a: sys.exit(75))
name = [a for a in sys.argv if a.startswith("--workdir=")][0].rsplit("/", 1)[1]
open(os.path.join({str(started)!r}, name), "w").close()
time.sleep(30)
""")
  (bin_dir / "python").chmod(0o755)
  (tmp_path / "variants.txt").write_text("A\nB\nC\n")
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FDJAX_SWEEP_PARALLEL="1")
  # bash with SIGINT at its default, as from a terminal: a test worker may ignore it,
  # which its children inherit and bash then cannot trap (no preexec_fn: a fork beside
  # JAX's threads)
  reset = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
           "os.execvp('bash', ['bash', *sys.argv[1:]])")
  sweep = subprocess.Popen([sys.executable, "-c", reset, str(REPO / "launch" / "gpu_sweep.sh"),
                            "c.py", str(tmp_path / "root"), str(tmp_path / "variants.txt")],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
  try:
    for _ in range(200):
      if (started / "A").exists():
        break
      time.sleep(0.05)
    os.killpg(sweep.pid, signal.SIGINT)    # a terminal's Ctrl-C: the whole process group
    out, _ = sweep.communicate(timeout=30)
  finally:
    if sweep.poll() is None:
      os.killpg(sweep.pid, signal.SIGKILL)
  assert sorted(os.listdir(started)) == ["A"], out
  assert "Ctrl-C: not starting B" in out and "== A: failed (exit 75" in out
  assert sweep.returncode == 1, out


def test_gpu_sweep_names_each_variant_once_and_sets_jaxlib_s_memory_variable(tmp_path):
  """Two variants of one name shared a workdir, log and status (one's output lost, its
  failure hidden); a value 'c#d' was cut at '#'; the deprecated XLA_PYTHON_ memory
  variable beside a user's XLA_CLIENT_MEM_FRACTION made jaxlib refuse to start."""
  bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
  bin_dir.mkdir()
  stand_in(bin_dir, "python", f"""
if [[ "$1" == "-c" ]]; then echo 0.45; exit 0; fi
echo "$* mem=${{XLA_CLIENT_MEM_FRACTION:-}} old=${{XLA_PYTHON_CLIENT_MEM_FRACTION:-}}" \\
    >> {shlex.quote(str(calls))}
for arg in "$@"; do
  if [[ "$arg" == --workdir=* ]]; then mkdir -p "${{arg#*=}}"; echo "| A |" > "${{arg#*=}}/results.md"; fi
done
exit 0
""")
  env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}",
             XLA_CLIENT_MEM_FRACTION="0.5", XLA_PYTHON_CLIENT_MEM_FRACTION="0.3")
  sweep = lambda variants: subprocess.run(  # noqa: E731
      ["bash", str(REPO / "launch" / "gpu_sweep.sh"), "c.py", "root", "variants.txt"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
  (tmp_path / "variants.txt").write_text("# a sweep\nA --config.tag=c#d  # one\nB\nA\n")
  run = sweep("variants.txt")
  assert run.returncode == 2 and "variant name 'A' is used twice" in run.stderr
  assert not calls.exists()
  (tmp_path / "variants.txt").write_text("# a sweep\nA --config.tag=c#d  # one\nB\n")
  run = sweep("variants.txt")
  assert run.returncode == 0, run.stdout + run.stderr
  lines = sorted(calls.read_text().splitlines())
  assert lines[0].endswith("--config.tag=c#d mem=0.45 old="), lines
  assert lines[1].endswith("--workdir=" + str(tmp_path / "root" / "B") + " mem=0.45 old=")
