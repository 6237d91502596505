"""The cluster path against a real single-node Slurm (slurmctld, slurmd and slurmdbd on this machine, started by
``scripts/slurm-local start``; ``make test`` and ``make test-slurm`` start it and stop it afterwards). Skipped, with
the reason, where no such Slurm answers (not root, no Debian packages)."""
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from racecar_repro.experiments import svd

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.integration, pytest.mark.slurm]


def _conf() -> str:
    return os.environ.get("SLURM_CONF") or str(ROOT / "build" / "slurm" / "slurm.conf")


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """A real Slurm answering (else skip), the runs in this test's folder, a fast poll, no user settings."""
    up = subprocess.run(["scripts/slurm-local", "status"], cwd=ROOT, env={**os.environ, "SLURM_CONF": _conf()},
                        capture_output=True)
    if up.returncode != 0:
        pytest.skip("no local Slurm answers (start it with scripts/slurm-local start, as root; make test does)")
    monkeypatch.setenv("SLURM_CONF", _conf())
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("RACECAR_SUBMITIT_POLL_S", "1")
    monkeypatch.setenv("RACECAR_SLURM_SETTINGS", str(tmp_path / "none.json"))
    monkeypatch.delenv("RACECAR_CLUSTER", raising=False)
    for key in [k for k in os.environ if k.startswith("RACECAR_SLURM_") and k != "RACECAR_SLURM_SETTINGS"]:
        monkeypatch.delenv(key)
    return tmp_path


class _Deadline:
    """Fails the test (instead of hanging CI) when its block runs longer than ``seconds``."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        def _expired(*_):
            raise TimeoutError(f"still waiting after {self.seconds} s")
        self.old = signal.signal(signal.SIGALRM, _expired)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def test_the_smoke_grid_through_slurm_equals_the_inline_grid(slurm, monkeypatch):
    import torch
    monkeypatch.setenv("RACECAR_SLURM_CPUS_PER_TASK", "1")     # one thread per job, two jobs at once
    lines: list[str] = []
    with _Deadline(300):
        dispatched = svd.run("peak", "smoke", report=lines.append, executor="slurm")
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(slurm / "inline"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                 # like with like: a job's one thread (other counts round differently)
    try:
        inline = svd.run("peak", "smoke", report=None, executor="inline")
    finally:
        torch.set_num_threads(threads)
    assert [r.metrics for r in dispatched.runs] == [r.metrics for r in inline.runs]      # bit for bit
    text = "\n".join(lines)
    assert "submitted 4 run(s) to slurm, each with --array=0-3" in text and "--cpus-per-task=1" in text  # as sbatch got
    assert " running " in text                # sacct polled at the project's pace, not submitit's (up to 10 min)


def test_a_job_cancelled_while_pending_ends_the_command_with_what_is_known(slurm, monkeypatch):
    """Slurm 22.05 never lists an array task cancelled while pending in sacct (its state stays UNKNOWN): the
    command used to wait for ever. Task 0 is cancelled alone (never listed: taken as lost after
    RACECAR_SUBMITIT_LOST_S), then the rest of the array (listed as CANCELLED)."""
    monkeypatch.setenv("RACECAR_SLURM_ADDITIONAL", json.dumps({"begin": "now+1hour"}))   # stays pending
    monkeypatch.setenv("RACECAR_SUBMITIT_LOST_S", "5")
    cancelled: list[str] = []

    def report(line: str) -> None:
        if "submitted" in line and not cancelled:
            manifest = json.loads((slurm / "runs" / "_submitit" / "svd_peak" / "jobs.json").read_text())
            (array,) = {e["job_id"].split("_")[0] for e in manifest.values()}
            cancelled.extend([f"{array}_0", array])
            for job in cancelled:
                subprocess.run(["scancel", job], check=True)

    with _Deadline(120), pytest.raises(RuntimeError, match="runs failed under submitit") as err:
        svd.run("peak", "smoke", report=report, executor="slurm")
    message = str(err.value)
    assert cancelled and "RESUBMIT=1" in message and message.count("CANCELLED") == 3, message
    assert message.count("taken as lost") == 1 and re.search(
        rf"\(job {cancelled[0]}: UNKNOWN: not known to the scheduler 5 s after submission "
        r"\(RACECAR_SUBMITIT_LOST_S\), taken as lost", message), message
    assert message.count("no log: the job never started") == 4, message


def test_a_job_over_its_memory_is_killed_and_named_so(slurm, monkeypatch):
    """jobacct_gather's OverMemoryKill (state FAILED, not OUT_OF_MEMORY) on jobs that asked for 200 MB: the failure
    line says memory, and which setting asks for more."""
    monkeypatch.setenv("RACECAR_SLURM_CPUS_PER_TASK", "1")
    monkeypatch.setenv("RACECAR_SLURM_ADDITIONAL", json.dumps({"mem": "200M"}))   # torch alone takes more
    lines: list[str] = []
    with _Deadline(180), pytest.raises(RuntimeError, match="runs failed under submitit") as err:
        svd.run("peak", "smoke", report=lines.append, executor="slurm")
    message = str(err.value)
    assert "--mem=200M" in "\n".join(lines)                                   # what sbatch got
    assert message.count("used more memory than it asked for") == 4 and "RACECAR_SLURM_MEM_GB" in message, message


def test_a_requeued_job_resumes_from_its_checkpoint(slurm, monkeypatch):
    """``scontrol requeue`` of a running job after its first checkpoint: Slurm kills it (submitit ignores the
    SIGTERM; SIGKILL follows after KillWait, 1 s here) and starts it again (after cred_expire, 5 s here); the second
    attempt breaks the first one's lock and resumes from the checkpoint. That a resumed run ends with the numbers of
    an uninterrupted one is checked in test_executors.py, on the same code path."""
    import threading
    import time

    from racecar_repro.experiments import info_planes
    monkeypatch.setenv("RACECAR_SLURM_CPUS_PER_TASK", "1")
    runs = slurm / "runs"
    requeued: list[str] = []

    def requeue_after_the_first_checkpoint() -> None:
        manifest = runs / "_submitit" / "info_planes" / "jobs.json"
        deadline = time.time() + 120
        while time.time() < deadline:
            if manifest.is_file() and list(runs.glob("info_planes_*/*/A/checkpoint.pt")):
                (entry,) = json.loads(manifest.read_text()).values()
                subprocess.run(["scontrol", "requeue", entry["job_id"]], check=True)
                requeued.append(entry["job_id"])
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=requeue_after_the_first_checkpoint, daemon=True)
    watcher.start()
    with _Deadline(240):      # about 8 s of training: the kill (3 s after) comes long before the end
        result = info_planes.run("smoke", report=None, executor="slurm", methods=["RR"], seeds=[0], n_train=96,
                                 n_eval=32, steps_a=6000, steps_b=4, eval_every=40)
    watcher.join()
    assert requeued and len(result.runs) == 1 and not result.runs[0].cached
    attempts = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-o", "JobID,State", "-j", requeued[0]],
                              capture_output=True, text=True, check=True).stdout.split()
    assert len(attempts) == 2 and attempts[0] == f"{requeued[0]}|REQUEUED", attempts   # the 2nd may still be ending
    logs = "".join(p.read_text() for p in (runs / "_submitit" / "info_planes").glob("*_log.err"))
    resumed = re.findall(r"resumed \S+ from its checkpoint at step (\d+) of 6000", logs)
    assert len(resumed) == 1 and 40 <= int(resumed[0]) < 6000, logs[-3000:]
    assert "DUE TO JOB REQUEUE" in logs and list(runs.glob("info_planes_*/*/.lock.stale-*"))   # its lock, broken


def test_a_partition_the_cluster_lacks_is_a_clear_error(slurm, monkeypatch):
    monkeypatch.setenv("RACECAR_SLURM_PARTITION", "nowhere")
    with _Deadline(60), pytest.raises(RuntimeError, match=r"slurm refused the jobs of svd_peak: .*[Pp]artition"):
        svd.run("peak", "smoke", report=None, executor="slurm")


class _Disconnect(Exception):
    """The laptop's connection dropping right after the jobs were submitted."""


def _disconnect(line: str) -> None:
    if "submitted" in line:
        raise _Disconnect


def test_scancel_then_resubmit_and_a_disconnect_then_reattach(slurm, monkeypatch):
    monkeypatch.setenv("RACECAR_SLURM_CPUS_PER_TASK", "1")
    monkeypatch.setenv("RACECAR_SUBMITIT_LOST_S", "5")
    monkeypatch.setenv("RACECAR_SLURM_ADDITIONAL", json.dumps({"begin": "now+1hour"}))   # pending until cancelled
    manifest = slurm / "runs" / "_submitit" / "svd_peak" / "jobs.json"
    with _Deadline(240):
        with pytest.raises(_Disconnect):
            svd.run("peak", "smoke", report=_disconnect, executor="slurm")
        jobs = sorted({e["job_id"].split("_")[0] for e in json.loads(manifest.read_text()).values()})
        subprocess.run(["scancel", *jobs], check=True)
        monkeypatch.delenv("RACECAR_SLURM_ADDITIONAL")
        with pytest.raises(RuntimeError, match="RESUBMIT=1"):        # a plain re-run lists them and ends
            svd.run("peak", "smoke", report=None, executor="slurm")
        with pytest.raises(_Disconnect):                             # resubmitted, and disconnected again
            svd.run("peak", "smoke", report=_disconnect, executor="slurm", resubmit=True)
        lines: list[str] = []
        result = svd.run("peak", "smoke", report=lines.append, executor="slurm")   # re-attaches, submits nothing
    assert any("re-attached to" in line for line in lines) and not any("submitted" in line for line in lines)
    assert len(result.runs) == 4 and all(0 <= r.metrics["test_acc"] <= 1 for r in result.runs)
