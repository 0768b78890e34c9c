"""The sbatch templates on a real single-host Slurm cluster: a 2-task CPU DDP fit, and a requeue that resumes.

The fixture installs Debian's ``slurm-wlm`` and ``munge`` when they are missing
(CI runs as root) and starts munged, slurmctld and slurmd on 127.0.0.1 with
every file under a temporary directory. Outside CI (``CI`` unset), a machine
without Slurm that cannot install it (not root, or no reachable Debian
registry) skips these tests with that reason; under ``CI=true`` it fails them,
and a broken Slurm fails them everywhere.
"""

import getpass
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from .test_resume import write_config

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "experiments/slurm/fit_cpu.sbatch"


class Throttle(Callback):
    """Slows training so that a signal arrives mid-run, and says where each run starts."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            print(f"training starts at step {trainer.global_step}", flush=True)

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def cannot_install(reason: str) -> None:
    """CI must run these tests; elsewhere a machine that cannot install Slurm skips them."""
    message = f"Slurm is not installed and cannot be: {reason}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def install_slurm() -> None:
    if all(shutil.which(tool) for tool in ("munged", "slurmctld", "slurmd", "sbatch")):
        return
    if os.geteuid() != 0:
        cannot_install("installing slurm-wlm and munge with apt-get needs root")
    if shutil.which("apt-get") is None:
        cannot_install("there is no apt-get (Debian's package manager) on this machine")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        update = subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
        if update.returncode != 0:
            cannot_install(f"the Debian registry cannot be reached (apt-get update: {update.stderr.strip()[-500:]})")
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"could not install slurm-wlm and munge with apt-get:\n{result.stderr[-2000:]}")


SLURM_CONF = """\
ClusterName=smoothie-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
# cred_expire=10: a requeued job restarts after 10 s instead of 2 minutes.
AuthInfo=socket={dir}/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# 4 CPUs whatever the machine has: two tasks fit on a 2-core CI runner.
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm(tmp_path_factory, free_port):
    """A running one-node cluster; yields the environment its commands need (``SLURM_CONF``)."""
    install_slurm()
    directory = tmp_path_factory.mktemp("slurm")
    for name in ("munge", "state", "spool"):
        (directory / name).mkdir(mode=0o700)
    key = directory / "munge/munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    conf = directory / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(dir=directory, user=getpass.getuser(), ctld_port=free_port(), slurmd_port=free_port())
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munge = directory / "munge"
    daemons = [
        ["munged", "--force", f"--socket={munge}/munge.socket", f"--key-file={key}", f"--pid-file={munge}/munged.pid",
         f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"],
        ["slurmctld", "-i"],
        ["slurmd", "-N", "localhost"],
    ]
    pid_files = [munge / "munged.pid", directory / "slurmctld.pid", directory / "slurmd.pid"]
    try:
        for command in daemons:
            subprocess.run(command, env=env, check=True, capture_output=True)
        wait_for(lambda: run(["sinfo", "-h", "-o", "%T"], env).strip() == "idle", 60, "the node to become idle")
        yield env
    finally:
        subprocess.run(["scancel", "--user", getpass.getuser()], env=env, capture_output=True)
        stop_daemons([int(path.read_text()) for path in reversed(pid_files) if path.exists()])


def stop_daemons(pids: list[int]) -> None:
    """SIGTERM, then SIGKILL what is still alive after 10 s (a slurmd waiting for a job step)."""
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def run(command: list[str], env: dict) -> str:
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.5)


def job_field(job: str, field: str, env: dict) -> str:
    return re.search(rf"\b{field}=(\S+)", run(["scontrol", "show", "job", job], env)).group(1)


def submit(slurm: dict, config: Path, cwd: Path) -> str:
    env = {
        **slurm,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "SMOOTHIE": f"{sys.executable} -m smoothie_pl.cli",
        "SMOOTHIE_SCRIPTS": str(TEMPLATE.parent),
        "PYTHONWARNINGS": "ignore",
    }
    return run(["sbatch", "--parsable", f"--chdir={cwd}", str(TEMPLATE), str(config)], env).strip()


FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def finish(job: str, slurm: dict, cwd: Path, seconds: float = 300) -> str:
    """Wait until the job completes; returns its log (every run of it)."""
    wait_for(lambda: job_field(job, "JobState", slurm) in FINAL_STATES, seconds, f"job {job} to end")
    log = (cwd / f"smoothie-cpu-{job}.out").read_text()
    assert job_field(job, "JobState", slurm) == "COMPLETED", log[-3000:]
    return log


def steps(checkpoint: Path) -> int:
    return torch.load(checkpoint, weights_only=False, map_location="cpu")["global_step"]


@pytest.mark.slow
def test_two_task_ddp_fit_through_sbatch(slurm, word_model, pairs_dir, tmp_path):
    config = write_config(tmp_path / "fit.yaml", word_model, pairs_dir, "unused", {"max_steps": 4})
    job = submit(slurm, config, tmp_path)
    log = finish(job, slurm, tmp_path)
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    assert steps(tmp_path / f"runs/smoothie-cpu-{job}/checkpoints/last.ckpt") == 4  # the template's run directory


@pytest.mark.slow
def test_usr1_checkpoints_requeues_and_the_job_finishes_where_it_stopped(slurm, word_model, pairs_dir, tmp_path):
    throttle = {"class_path": "tests.test_slurm.Throttle", "init_args": {"seconds": 0.5}}
    config = write_config(tmp_path / "fit.yaml", word_model, pairs_dir, "unused", {"max_steps": 30}, (), [throttle])
    job = submit(slurm, config, tmp_path)
    run_dir = tmp_path / f"runs/smoothie-cpu-{job}"
    last = run_dir / "checkpoints/last.ckpt"
    wait_for(last.exists, 180, "the first checkpoint")
    run(["scancel", "-s", "USR1", job], slurm)  # what --signal=SIGUSR1@60 sends before the time limit

    log = finish(job, slurm, tmp_path)
    assert job_field(job, "Restarts", slurm) == "1"
    (hpc,) = run_dir.glob("hpc_ckpt_*.ckpt")
    assert 0 < steps(hpc) < 30
    # The rerun resumes from the newest checkpoint: the requeue one, or a last.ckpt saved after it.
    starts = [int(step) for step in re.findall(r"training starts at step (\d+)", log)]
    assert starts[0] == 0 and len(starts) == 2 and starts[1] >= steps(hpc), starts
    assert f"resuming from {run_dir.resolve()}" in log
    assert steps(last) == 30


def fake_machine(monkeypatch, ci: str | None, root: bool, tools: tuple[str, ...], apt_returncode: int = 0) -> None:
    """A machine with only ``tools`` on its PATH, whose apt-get commands all exit ``apt_returncode``."""
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(os, "geteuid", lambda: 0 if root else 1000)
    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/bin/{tool}" if tool in tools else None)
    failed = subprocess.CompletedProcess([], apt_returncode, "", "Temporary failure resolving 'deb.debian.org'")
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: failed)


@pytest.mark.parametrize(
    "root, tools, reason",
    [(False, ("apt-get",), "needs root"), (True, (), "no apt-get"), (True, ("apt-get",), "registry cannot be reached")],
    ids=["not-root", "no-apt", "no-registry"],
)
def test_a_machine_that_cannot_install_slurm_skips_outside_ci(monkeypatch, root, tools, reason):
    fake_machine(monkeypatch, None, root, tools, apt_returncode=100)
    with pytest.raises(pytest.skip.Exception, match=reason):
        install_slurm()


@pytest.mark.parametrize("root, tools", [(False, ("apt-get",)), (True, ("apt-get",))], ids=["not-root", "no-registry"])
def test_under_ci_a_machine_that_cannot_install_slurm_fails(monkeypatch, root, tools):
    fake_machine(monkeypatch, "true", root, tools, apt_returncode=100)
    with pytest.raises(pytest.fail.Exception, match="Slurm is not installed and cannot be"):
        install_slurm()
