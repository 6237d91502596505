"""racecar_repro.executors: the local executor trains the runs of a grid in worker processes, with the same results
as inline training."""
import json

import pytest
import torch

from racecar_repro import executors
from racecar_repro.experiments import cifar, info_planes
from test_experiments_cifar import TINY, tiny_fashion  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration   # slow or multi-process: `make test`, not `make test-fast`


def test_the_executor_comes_from_the_call_or_the_environment(monkeypatch):
    monkeypatch.delenv("RACECAR_EXECUTOR", raising=False)
    monkeypatch.delenv("RACECAR_WORKERS", raising=False)
    assert executors.resolve(None, None) == ("inline", 1)
    monkeypatch.setenv("RACECAR_EXECUTOR", "local")
    monkeypatch.setenv("RACECAR_WORKERS", "3")
    assert executors.resolve(None, None) == ("local", 3) and executors.resolve("local", 2) == ("local", 2)
    with pytest.raises(ValueError, match="unknown executor 'pbs'.*'inline', 'local', 'torchrun', 'slurm'"):
        executors.resolve("pbs", None)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        executors.resolve("local", 0)


def test_local_workers_give_the_inline_results(data_dir, no_network, tmp_path, monkeypatch):
    small = dict(methods=["Std", "RR"], seeds=[0, 1], n_train=96, n_eval=32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                 # each of the two workers gets one of the two cores: compare like with like
    try:
        monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "inline"))
        inline = info_planes.run("smoke", report=None, executor="inline", **small)
        monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "local"))
        lines: list[str] = []
        local = info_planes.run("smoke", report=lines.append, executor="local", workers=2, **small)
    finally:
        torch.set_num_threads(threads)
    assert [r.spec.key for r in local.runs] == [r.spec.key for r in inline.runs]
    assert local.trained_now == 4 and sum("trained by a worker" in x for x in lines) == 4
    for a, b in zip(inline.runs, local.runs):
        assert a.metrics == b.metrics and a.evals == b.evals, a.spec.key
        for k, t in a.arrays.items():
            assert torch.equal(t, b.arrays[k]), (a.spec.key, k)
    again = info_planes.run("smoke", report=None, executor="local", workers=2, **small)
    assert again.trained_now == 0                                    # nothing left to train: no worker started


def test_torchrun_trains_each_run_on_two_processes_with_the_inline_numbers(tiny_fashion):  # noqa: F811
    """executor="torchrun": each run of the CIFAR grid on 2 gloo processes (torchrun --standalone, the real launcher),
    data-parallel with synchronised batch norms: the loss curves of one process, a run config of its own."""
    small = dict(TINY, methods=["Std", "RR", "Pre"], batch_size=20, pre_epochs=1)   # 3 steps an epoch, shards of 10
    inline = cifar.run("smoke", report=None, **small)
    lines: list[str] = []
    ddp = cifar.run("smoke", report=lines.append, executor="torchrun", workers=2, **small)
    assert ddp.params["replicas"] == 2 and ddp.trained_now == 3
    assert any("torchrun: 3 run(s), each on 2 processes" in x for x in lines), lines
    for a, b in zip(inline.runs, ddp.runs):
        assert b.config["train"]["replicas"] == 2 and b.config["train"]["sync_bn"] is True
        assert "replicas" not in a.config["train"]                   # one process: the key it always had
        la, lb = ([r["loss"] for r in run.log] for run in (a, b))
        assert len(la) == len(lb) and lb == pytest.approx(la, rel=1e-4), a.spec.key
        assert b.trained_by["code_fingerprint"] == a.trained_by["code_fingerprint"]
    again = cifar.run("smoke", report=lines.append, executor="torchrun", workers=2, **small)
    assert again.trained_now == 0 and sum("torchrun:" in x for x in lines) == 2     # nothing launched the 2nd time
    with pytest.raises(ValueError, match="torchrun --nproc-per-node 2"):             # not trainable in one process
        cifar.run("smoke", report=None, replicas=2, **{**small, "seeds": [7]})


def test_a_slurm_job_with_two_tasks_trains_one_run_data_parallel(tiny_fashion, tmp_path, monkeypatch):  # noqa: F811
    """EXECUTOR=slurm REPLICAS=2: each run's job has 2 tasks forming its process group (submitit's local executor
    and TorchDistributedEnvironment, gloo): the torchrun path's numbers."""
    pytest.importorskip("submitit")
    for key, value in (("RACECAR_CLUSTER", "local"), ("RACECAR_SLURM_SETTINGS", str(tmp_path / "none.json")),
                       ("RACECAR_SUBMITIT_POLL_S", "0.3"), ("RACECAR_SLURM_CPUS_PER_TASK", "1"),
                       ("RACECAR_REPLICAS", "2")):
        monkeypatch.setenv(key, value)
    small = dict(TINY, methods=["RR"], batch_size=20)
    inline = cifar.run("smoke", report=None, **small)
    lines: list[str] = []
    # as notebook 03 calls it: its parameters replicas and sync_bn left at None
    ddp = cifar.run("smoke", report=lines.append, executor="slurm", replicas=None, sync_bn=None, **small)
    assert ddp.params["replicas"] == 2 and ddp.trained_now == 1
    assert any("tasks_per_node=2" in x for x in lines), lines
    (a,), (b,) = inline.runs, ddp.runs
    assert b.config["train"]["replicas"] == 2
    assert [r["loss"] for r in b.log] == pytest.approx([r["loss"] for r in a.log], rel=1e-4)


def test_torchrun_leaves_an_experiment_without_replicas_inline(data_dir, no_network, tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path))
    lines: list[str] = []
    out = info_planes.run("smoke", report=lines.append, executor="torchrun", workers=2, methods=["Std"], seeds=[0],
                          n_train=64, n_eval=32)
    assert out.trained_now == 1 and "no data-parallel path" in lines[0]


def test_submitit_runs_the_slurm_path_with_its_local_executor(data_dir, no_network, tmp_path, monkeypatch):
    """executor="slurm" through submitit's real code path (its local executor here: no Slurm in CI): one array job
    per grid, a status line per poll, the results of inline training."""
    pytest.importorskip("submitit")
    small = dict(methods=["Std", "RR"], seeds=[0], n_train=96, n_eval=32)
    settings = tmp_path / "slurm.json"
    settings.write_text('{"partition": "gpu", "cpus_per_task": 1, "timeout_min": 30}')
    for key, value in (("RACECAR_CLUSTER", "local"), ("RACECAR_SLURM_SETTINGS", str(settings)),
                       ("RACECAR_SUBMITIT_POLL_S", "0.5"), ("RACECAR_SLURM_MEM_GB", "4")):
        monkeypatch.setenv(key, value)
    assert executors.slurm_settings() == {"partition": "gpu", "cpus_per_task": 1, "timeout_min": 30, "mem_gb": 4}
    # a run's resources: the experiment's for the profile, then the user's settings
    assert executors.job_resources(cifar.EXPERIMENT, "paper", {}) == {
        "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 720}
    assert executors.job_resources(cifar.EXPERIMENT, "paper") == {
        "gpus_per_node": 1, "cpus_per_task": 1, "mem_gb": 4, "timeout_min": 30}
    assert executors.job_resources(info_planes.EXPERIMENT, "smoke") == {"cpus_per_task": 1, "mem_gb": 4,
                                                                        "timeout_min": 30}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "inline"))
        inline = info_planes.run("smoke", report=None, **small)
        monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "slurm"))
        lines: list[str] = []
        dispatched = info_planes.run("smoke", report=lines.append, executor="slurm", **small)
    finally:
        torch.set_num_threads(threads)
    assert dispatched.trained_now == 2 and any("0 queued, 0 running, 2 done, 0 failed" in x for x in lines)
    for a, b in zip(inline.runs, dispatched.runs):
        assert a.metrics == b.metrics and a.evals == b.evals, a.spec.key
    assert list((tmp_path / "slurm" / "_submitit" / "info_planes").glob("*_log.out"))      # the jobs' logs
    (tmp_path / "bad.json").write_text('{"partitoin": "gpu"}')
    monkeypatch.setenv("RACECAR_SLURM_SETTINGS", str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="unknown Slurm setting.*partitoin"):
        executors.slurm_settings()


def test_slurm_settings_are_checked_and_named_in_their_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_SLURM_SETTINGS", str(tmp_path / "none.json"))
    monkeypatch.setenv("RACECAR_SLURM_MEM_GB", "0.2")
    with pytest.raises(ValueError, match=r"RACECAR_SLURM_MEM_GB='0.2' is not a whole number"):
        executors.slurm_settings()
    monkeypatch.delenv("RACECAR_SLURM_MEM_GB")
    for bad, match in (({"mem_gb": 0}, r"mem_gb=0 must be a whole number of at least 1 \(Slurm reads --mem=0 as the "
                                       "whole node"), ({"cpus_per_task": 1.5}, "cpus_per_task=1.5 must be a whole"),
                       ({"gpus_per_node": -1}, "gpus_per_node=-1 must be a whole number of at least 0"),
                       ({"partition": 3}, "partition=3 must be a string"), ({"additional": "x"}, "a JSON object")):
        (tmp_path / "s.json").write_text(json.dumps(bad))
        monkeypatch.setenv("RACECAR_SLURM_SETTINGS", str(tmp_path / "s.json"))
        with pytest.raises(ValueError, match=match):
            executors.slurm_settings()
    (tmp_path / "s.json").write_text(json.dumps({"gpus_per_node": 0, "mem_gb": 2, "additional": {"begin": "now"}}))
    assert executors.slurm_settings() == {"gpus_per_node": 0, "mem_gb": 2, "additional": {"begin": "now"}}

    class Exp:
        resources = {"smoke": {"mem_gb": 0}}
    with pytest.raises(ValueError, match="job resources {'mem_gb': 0} must be whole numbers of at least 1"):
        executors.job_resources(Exp(), "smoke", {})


def test_the_status_table_shows_each_runs_state_progress_and_eta():
    table = executors.status_table([
        {"key": "RR/seed0", "state": "running", "job": "812_0", "progress": (250, 1000, 100.0)},
        {"key": "RR/seed1", "state": "queued", "job": "812_1", "progress": None},
        {"key": "Std/seed0", "state": "done", "job": None, "progress": None}])
    lines = table.splitlines()
    assert lines[0].split() == ["run", "state", "job", "progress", "ETA"]
    assert lines[1].split() == ["RR/seed0", "running", "812_0", "250/1000", "steps", "5m00s"]   # 0.4 s a step
    assert lines[2].split() == ["RR/seed1", "queued", "812_1"] and lines[-1] == "1 queued, 1 running, 1 done, 0 failed"


class Disconnected(Exception):
    """The laptop that waits for the jobs goes away."""


def test_calling_again_reattaches_to_running_jobs_and_resubmits_failed_ones_on_request(data_dir, no_network,
                                                                                     tmp_path, monkeypatch):
    """After a disconnect the next call waits for the jobs still running instead of submitting them twice; a run
    whose job ended without a result is listed with its log and submitted again only with resubmit."""
    import json
    import re
    pytest.importorskip("submitit")
    kw = dict(methods=["Std", "RR"], seeds=[0], n_train=96, n_eval=32, steps_a=300, steps_b=4, eval_every=50)
    for key, value in (("RACECAR_CLUSTER", "local"), ("RACECAR_SLURM_SETTINGS", str(tmp_path / "none.json")),
                       ("RACECAR_SUBMITIT_POLL_S", "0.3"), ("RACECAR_SLURM_CPUS_PER_TASK", "1"),
                       ("RACECAR_RUNS_DIR", str(tmp_path / "runs"))):
        monkeypatch.setenv(key, value)
    manifest = tmp_path / "runs" / "_submitit" / "info_planes" / "jobs.json"

    def disconnect(line: str) -> None:
        if "submitted 2 run(s)" in line:
            raise Disconnected(line)

    with pytest.raises(Disconnected):
        info_planes.run("smoke", report=disconnect, executor="slurm", **kw)
    first = json.loads(manifest.read_text())
    assert sorted(e["key"] for e in first.values()) == ["RR/seed0", "Std/seed0"]
    lines: list[str] = []
    out = info_planes.run("smoke", report=lines.append, executor="slurm", **kw)
    assert any("re-attached to 2 job(s) still queued or running" in x for x in lines), lines
    assert not any("submitted" in x for x in lines) and json.loads(manifest.read_text()) == first
    assert out.trained_now == 2
    assert any(re.search(r"RR/seed0 +done", x) and "0 queued, 0 running, 2 done" in x for x in lines), lines
    # a run whose job ended without its result (deleted here): listed, not resubmitted; then resubmitted on request
    (std,) = [r for r in out.runs if r.spec.method == "Std"]
    folder = next(p.parent for p in (tmp_path / "runs").glob("info_planes_*/*/config.json")
                  if json.loads(p.read_text()) == std.config)
    (folder / "result.pt").unlink()
    with pytest.raises(RuntimeError, match=r"Std/seed0 \(job \d+: FINISHED; log .*_log.err\).*RESUBMIT=1"):
        info_planes.run("smoke", report=None, executor="slurm", **kw)
    again = info_planes.run("smoke", report=None, executor="slurm", resubmit=True, **kw)
    assert again.trained_now == 1 and json.loads(manifest.read_text()) != first


def _job(runs_dir: str, data: str, kw: dict) -> None:
    """A cluster job: train the grid inline (what a submitit job or a worker does)."""
    import os
    os.environ["RACECAR_RUNS_DIR"], os.environ["RACECAR_DATA_DIR"] = runs_dir, data
    torch.set_num_threads(1)
    info_planes.run("smoke", report=None, **kw)


def test_a_job_killed_mid_run_resumes_from_its_checkpoint_with_the_uninterrupted_result(data_dir, no_network,
                                                                                        tmp_path, monkeypatch):
    """The scheduler kills a job (SIGKILL, lock held, checkpoint written); requeued, the run breaks the dead job's
    lock, resumes from the checkpoint and ends with the numbers of a run that was never interrupted."""
    import multiprocessing as mp
    import os
    import signal
    import time
    kw = dict(methods=["RR"], seeds=[0], n_train=96, n_eval=32, steps_a=600, steps_b=4, eval_every=40)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "reference"))
        reference = info_planes.run("smoke", report=None, **kw)
        runs_dir = tmp_path / "killed"
        ctx = mp.get_context("spawn")
        job = ctx.Process(target=_job, args=(str(runs_dir), os.environ["RACECAR_DATA_DIR"], kw))
        job.start()
        deadline = time.time() + 120
        while time.time() < deadline and not list(runs_dir.glob("info_planes_*/*/A/checkpoint.pt")):
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(job.pid, signal.SIGKILL)
        job.join(timeout=30)
        (ckpt,) = runs_dir.glob("info_planes_*/*/A/checkpoint.pt")
        assert not list(runs_dir.glob("info_planes_*/*/result.pt"))         # killed before it finished
        monkeypatch.setenv("RACECAR_RUNS_DIR", str(runs_dir))
        with pytest.warns(Warning, match="no longer running"):                # the dead job's lock is broken
            resumed = info_planes.run("smoke", report=None, **kw)
    finally:
        torch.set_num_threads(threads)
    (a,), (b,) = reference.runs, resumed.runs
    assert not b.cached and a.metrics == b.metrics and a.evals == b.evals
    assert all(torch.equal(t, b.arrays[k]) for k, t in a.arrays.items())
    assert list(ckpt.parent.parent.glob(".lock.stale-*"))                   # the lock it broke, kept aside


def test_a_notebook_writes_the_inline_results_json_under_every_executor(tmp_path):
    """The acceptance check of the cluster path: the smoke profile of notebook 02 (the richest grid: official,
    corrected and the lambda sweep), run by the notebook runner (as make figures does) inline and through submitit's
    local executor, writes the same results.json (every number equal to a relative 1e-9; times and provenance
    aside). One thread everywhere, so that the comparison is like with like. Local workers, torchrun and the other
    experiments' runs under each executor are checked above without the notebook around them."""
    import importlib.util
    import os
    import subprocess
    import sys

    from racecar_repro import paths
    spec = importlib.util.spec_from_file_location("compare_results", paths.ROOT / "scripts" / "compare_results.py")
    compare_results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare_results)
    base = {**os.environ, "OMP_NUM_THREADS": "1", "RACECAR_WORKERS": "2", "RACECAR_CLUSTER": "local",
            "RACECAR_SLURM_SETTINGS": str(tmp_path / "none.json"), "RACECAR_SLURM_CPUS_PER_TASK": "1",
            "RACECAR_SUBMITIT_POLL_S": "0.5"}
    runs = {}
    for executor in ("inline", "slurm"):   # at once, one thread each: the two take the time of one
        env = {**base, "RACECAR_EXECUTOR": executor, "RACECAR_RUNS_DIR": str(tmp_path / f"runs-{executor}"),
               "RACECAR_FIGURES_DIR": str(tmp_path / executor)}
        runs[executor] = subprocess.Popen([sys.executable, "-m", "racecar_repro.notebook_runner", "--profile", "smoke",
                                           "--only", "02_svd_peak"], env=env, cwd=paths.ROOT, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True)
    for executor, job in runs.items():
        out, err = job.communicate(timeout=600)
        assert job.returncode == 0, out[-3000:] + err[-3000:]
        assert len(list((tmp_path / executor).glob("*/results.json"))) == 1, out[-2000:]
    changes, _ = compare_results.compare(tmp_path / "inline", tmp_path / "slurm")
    assert changes == [], changes[:10]
    assert list((tmp_path / "runs-slurm" / "_submitit").glob("*/jobs.json"))          # it did go through submitit

