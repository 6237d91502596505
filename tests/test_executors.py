"""racecar_core.executors: the local executor trains the runs of a grid in worker processes, with the same results
as inline training."""
import pytest
import torch

from racecar_core import executors
from racecar_core.experiments import info_planes


def test_the_executor_comes_from_the_call_or_the_environment(monkeypatch):
    monkeypatch.delenv("RACECAR_EXECUTOR", raising=False)
    monkeypatch.delenv("RACECAR_WORKERS", raising=False)
    assert executors.resolve(None, None) == ("inline", 1)
    monkeypatch.setenv("RACECAR_EXECUTOR", "local")
    monkeypatch.setenv("RACECAR_WORKERS", "3")
    assert executors.resolve(None, None) == ("local", 3) and executors.resolve("local", 2) == ("local", 2)
    with pytest.raises(ValueError, match="unknown executor 'pbs'.*'inline', 'local', 'slurm'"):
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
    assert dispatched.trained_now == 2 and any("submitit (local): 0 queued, 0 running, 2 done" in x for x in lines)
    for a, b in zip(inline.runs, dispatched.runs):
        assert a.metrics == b.metrics and a.evals == b.evals, a.spec.key
    assert list((tmp_path / "slurm" / "_submitit" / "info_planes").glob("*_log.out"))      # the jobs' logs
    (tmp_path / "bad.json").write_text('{"partitoin": "gpu"}')
    monkeypatch.setenv("RACECAR_SLURM_SETTINGS", str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="unknown Slurm setting.*partitoin"):
        executors.slurm_settings()
