"""The run cache: keyed on the code as well as the config, says who trained a run, trains a run once across processes."""
import multiprocessing as mp
import time
from pathlib import Path

import pytest
import torch

from racecar_repro import runs
from racecar_core.files import read_json


def _train_counting(run_dir):
    with open(run_dir.parent / "calls.txt", "a") as f:
        f.write(f"{run_dir.name}\n")
    time.sleep(1.0)  # long enough for the other process to ask for the same run meanwhile
    return {"value": torch.arange(3.0)}


def _ask(runs_dir: str, out: "mp.Queue") -> None:
    import os
    os.environ["RACECAR_RUNS_DIR"] = runs_dir
    r = runs.cached_run("exp", {"lr": 1e-3}, _train_counting)
    out.put((r["cached"], r["value"].tolist()))


def test_a_change_to_the_code_is_a_different_run(tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path))
    calls = []

    def train(run_dir):
        calls.append(run_dir)
        return {"acc": 0.5}

    cfg = {"lr": 1e-3}
    runs.cached_run("exp", cfg, train)
    assert runs.cached_run("exp", cfg, train)["cached"] and len(calls) == 1
    monkeypatch.setattr(runs, "code_fingerprint", lambda code=None: "edited-reverse-py")
    fresh = runs.cached_run("exp", cfg, train)
    assert not fresh["cached"] and len(calls) == 2 and calls[0] != calls[1]


def test_the_fingerprint_covers_the_core_and_what_the_experiment_imports():
    mods = set(runs.code_modules("racecar_repro.experiments.svd"))
    assert {"racecar_core.reverse", "racecar_core.methods", "racecar_core.train", "racecar_repro.experiments.svd",
            "racecar_repro.experiments.params", "racecar_repro.data.peak", "racecar_repro.data.official"} <= mods
    assert not mods & {"racecar_core.files", "racecar_repro.runs", "racecar_repro.executors", "racecar_repro.plotting",
                       "racecar_repro.notebook_runner", "racecar_repro.experiments.grid",
                       "racecar_repro.experiments.svd_figures", "racecar_repro.data.weatherbench"}
    assert len(runs.code_fingerprint("racecar_repro.experiments.svd")) == 16


@pytest.mark.integration
def test_editing_the_harness_reuses_runs_and_editing_the_reverse_pass_retrains(tmp_path, monkeypatch):
    """On a copy of both packages: a cached run is found again after an edit of the run cache, the executors and
    the plots, and trained again after an edit of the reverse pass or of the experiment's data loader."""
    import shutil

    from racecar_repro import paths
    root = tmp_path / "repo"
    for pkg in ("racecar_core", "racecar_repro"):
        shutil.copytree(paths.ROOT / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(paths, "ROOT", root)
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path / "runs"))
    code, calls = "racecar_repro.experiments.svd", []

    def ask() -> bool:
        runs.code_fingerprint.cache_clear()
        return runs.cached_run("svd_peak", {"lr": 1e-3}, lambda d: calls.append(d) or {"acc": 0.5}, code)["cached"]

    def edit(name: str) -> None:
        with open(root / name, "a") as f:
            f.write("\n# an edit\n")

    assert not ask() and ask()
    for harness in ("racecar_repro/runs.py", "racecar_repro/executors.py", "racecar_repro/plotting.py",
                    "racecar_repro/experiments/grid.py", "racecar_repro/experiments/svd_figures.py"):
        edit(harness)
        assert ask(), f"an edit of {harness} retrained a run"
    for method in ("racecar_core/reverse.py", "racecar_repro/data/peak.py"):
        edit(method)
        assert not ask(), f"an edit of {method} reused a run"
    assert len(calls) == 3
    runs.code_fingerprint.cache_clear()


def test_a_result_says_which_commit_and_code_trained_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path))
    r = runs.cached_run("exp", {"a": 1}, lambda d: {"acc": 1.0})
    by = r["trained_by"]
    assert by["code_fingerprint"] == runs.code_fingerprint() and by["torch_version"] == torch.__version__
    assert by["commit"] != "" and "git_dirty" in by
    again = runs.cached_run("exp", {"a": 1}, lambda d: {"acc": 2.0})
    assert again["cached"] and again["trained_by"] == by and again["acc"] == 1.0
    stored = read_json(next(tmp_path.glob("exp/*/result.json")))
    assert stored["trained_by"]["code_fingerprint"] == by["code_fingerprint"]


@pytest.mark.integration
def test_two_processes_asking_for_one_run_train_it_once(tmp_path):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_ask, args=(str(tmp_path), q)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(c for c, _ in got) == [False, True]  # one trained, the other waited and loaded its result
    assert all(v == [0.0, 1.0, 2.0] for _, v in got)
    assert len((tmp_path / "exp" / "calls.txt").read_text().split()) == 1
    assert len(list((tmp_path / "exp").glob("*/result.pt"))) == 1


def test_a_damaged_result_is_set_aside_and_the_run_trained_again(tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path))
    calls = []

    def train(run_dir: Path) -> dict:
        calls.append(run_dir)
        return {"metrics": {"acc": 0.75}, "arrays": {"w": torch.ones(3)}}

    first = runs.cached_run("exp", {"k": 1}, train)
    (result,) = tmp_path.glob("exp/*/result.pt")
    assert runs.cached_run("exp", {"k": 1}, train)["cached"] and len(calls) == 1
    for damage in (lambda b: b[: len(b) - 10], lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:]):
        result.write_bytes(damage(result.read_bytes()))
        with pytest.warns(runs.DamagedRunWarning, match="set aside as result.pt.damaged-"):
            again = runs.cached_run("exp", {"k": 1}, train)
        assert not again["cached"] and again["metrics"] == first["metrics"] and torch.equal(again["arrays"]["w"],
                                                                                             first["arrays"]["w"])
        assert runs.cached_run("exp", {"k": 1}, train)["cached"]                # stored sound again
    assert len(calls) == 3 and len(list(result.parent.glob("result.pt.damaged-*"))) >= 1


def _hold_lock(folder: str, ready) -> None:
    with runs.RunLock(Path(folder), heartbeat=0.1):
        ready.set()
        time.sleep(120)


@pytest.mark.integration
def test_a_lock_left_by_a_killed_job_is_broken_and_the_run_trained(tmp_path, monkeypatch):
    import os
    import signal

    import pytest
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path))
    d = runs.run_dir("exp", {"k": 1})
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    job = ctx.Process(target=_hold_lock, args=(str(d), ready))
    job.start()
    assert ready.wait(60) and (d / ".lock").exists()
    os.kill(job.pid, signal.SIGKILL)                       # the scheduler kills the job holding the lock
    job.join(timeout=30)
    with pytest.warns(runs.StaleLockWarning, match=f"owner .*:{job.pid} is no longer running"):
        result = runs.cached_run("exp", {"k": 1}, lambda run_dir: {"value": torch.ones(2)})
    assert not result["cached"] and not (d / ".lock").exists() and len(list(d.glob(".lock.stale-*"))) == 1


def test_a_lock_of_another_machine_holds_until_its_heartbeat_stops(tmp_path):
    import os

    import pytest
    lock = tmp_path / ".lock"
    lock.write_text("other-node 12345 0123abcd\n")        # a job on another node, heartbeat fresh
    with pytest.raises(runs.LockTimeout, match="locked by other-node 12345 0123abcd"):
        with runs.RunLock(tmp_path, stale_after=5, timeout=0.5, poll=0.05):
            pass
    old = time.time() - 10                                 # ... whose heartbeat stopped 10 s ago
    os.utime(lock, (old, old))
    with pytest.warns(runs.StaleLockWarning, match="has not refreshed it for 1[0-9] s"):
        with runs.RunLock(tmp_path, stale_after=5, timeout=5, poll=0.05) as held:
            assert lock.read_text().strip() == held.token
    assert not lock.exists()


def test_the_heartbeat_keeps_a_held_lock_fresh(tmp_path):
    import os
    with runs.RunLock(tmp_path, heartbeat=0.05) as held:
        old = time.time() - 100
        os.utime(held.path, (old, old))
        time.sleep(0.4)
        assert held.age() < 5 and held.stale_reason(held.owner()) is None
