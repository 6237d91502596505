"""Where the runs of a grid are trained (docs/cluster.md): ``inline`` (in this process, one after another: the
default), ``local`` (``workers`` processes, each pinned to a GPU and to its share of the CPU cores), ``torchrun``
(each run on ``workers`` processes at once, data-parallel: ``racecar_core.distributed``; for the experiments with a
``replicas`` parameter) or ``slurm`` (one submitit array job per grid; ``RACECAR_CLUSTER=local`` runs the same code
path with submitit's local executor, as the tests do). A worker or job trains a run into its run folder and the grid
then loads it like any cached run, so what a figure shows does not depend on where a run was trained.

Choose with ``run(..., executor="local", workers=4)`` or the environment (``RACECAR_EXECUTOR=local
RACECAR_WORKERS=4``; ``make figures EXECUTOR=local WORKERS=4`` sets them).
"""
from __future__ import annotations

import functools
import json
import multiprocessing as mp
import os
import pickle
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Sequence

EXECUTORS = ("inline", "local", "torchrun", "slurm")


def resolve(executor: str | None, workers: int | None) -> tuple[str, int]:
    """The executor and worker count from the arguments, else ``RACECAR_EXECUTOR`` / ``RACECAR_WORKERS``, else
    ``inline``; ``local`` and ``torchrun`` default to one process per GPU, or two on a CPU-only machine."""
    executor = executor or os.environ.get("RACECAR_EXECUTOR") or "inline"
    if executor not in EXECUTORS:
        raise ValueError(f"racecar: unknown executor {executor!r}; use one of {EXECUTORS} "
                         "(RACECAR_EXECUTOR / make figures EXECUTOR=...)")
    if executor == "inline":
        return executor, 1
    if workers is None and os.environ.get("RACECAR_WORKERS"):
        workers = int(os.environ["RACECAR_WORKERS"])
    if workers is None:
        import torch
        workers = torch.cuda.device_count() or 2
    if workers < 1:
        raise ValueError(f"racecar: workers must be at least 1, got {workers}")
    return executor, workers


def _init_worker(devices: "mp.Queue", threads: int) -> None:
    """Pin this worker to the next free GPU (when there are GPUs) and to ``threads`` CPU threads."""
    device = devices.get()
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch
    torch.set_num_threads(threads)


def _payload(exp: Any, params: dict[str, Any], specs: Sequence[Any]) -> bytes:
    """What a worker, torchrun replica or job needs: the experiment, its resolved parameters, the runs by key (so
    that this module needs nothing of the grid's)."""
    import cloudpickle
    return cloudpickle.dumps((exp, dict(params), {s.key: s for s in specs}))


@functools.lru_cache(maxsize=1)
def _loaded(blob: bytes) -> tuple[Any, dict[str, Any], Any]:
    """The experiment, its runs by key and its data from a ``_payload``: the data are loaded once per process."""
    exp, params, specs = pickle.loads(blob)
    return exp, specs, exp.load(params).value


def _train_one(blob: bytes, key: str) -> str:
    """Train run ``key`` of the ``_payload`` ``blob`` into the run cache."""
    from racecar_core.train import progress_label
    from racecar_repro import runs
    exp, specs, data = _loaded(blob)
    spec = specs[key]
    config, fit = exp.train(spec, data)
    with progress_label(f"{spec.key} (worker {os.getpid()})"):
        runs.cached_run(spec.experiment, config, fit, exp.code)
    return key


def _train_in_group(blob: bytes, keys: Sequence[str]) -> None:
    """As one replica of a process group set up in the environment (torchrun, a Slurm job's tasks): join the group,
    train the runs ``keys`` together with the other replicas, leave."""
    import torch.distributed as dist

    from racecar_core import distributed
    distributed.init_from_env()
    try:
        for key in keys:
            _train_one(blob, key)
        dist.barrier()           # every replica done with its collectives before the group ends (not after a failure:
    finally:                     # the others would wait for ever; torchrun stops them)
        distributed.shutdown()


def train_in_workers(exp: Any, params: dict[str, Any], specs: Sequence[Any], workers: int,
                     report: Callable[[str], None] | None = print) -> list[str]:
    """Train the runs ``specs`` (of the grid with the resolved ``params``) in ``workers`` spawned processes, each
    pinned to a GPU when there are GPUs, and to its share of this process's CPU cores; returns the keys in the
    order they finished. A run that fails raises here with its key."""
    import torch

    from racecar_repro.notebook_runner import cpu_threads
    keys = [s.key for s in specs]
    if not keys:
        return []
    workers = min(workers, len(keys))
    ctx = mp.get_context("spawn")
    devices = ctx.Queue()
    gpus = torch.cuda.device_count()
    for i in range(workers):
        devices.put(i % gpus if gpus else None)
    threads = max(1, cpu_threads() // workers)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():     # a cap the caller set (make figures, tests)
        threads = max(1, min(threads, int(os.environ["OMP_NUM_THREADS"])))
    blob = _payload(exp, params, specs)
    done = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(devices, threads)) as pool:
        futures = {pool.submit(_train_one, blob, key): key for key in keys}
        for future in as_completed(futures):
            key = futures[future]
            try:
                future.result()
            except Exception as exc:
                raise RuntimeError(f"racecar: run {key} failed in a worker: {type(exc).__name__}: {exc}") from exc
            done.append(key)
            if report is not None:
                report(f"[{exp.name}] {key}: trained by a worker ({len(done)}/{len(keys)})")
    return done


def train_with_torchrun(exp: Any, params: dict[str, Any], specs: Sequence[Any], replicas: int,
                        report: Callable[[str], None] | None = print) -> list[str]:
    """Train the runs ``specs`` one after another, each on ``replicas`` processes of this machine at once (one per
    GPU; gloo on a CPU-only machine), launched by ``torchrun --standalone``; ``params`` must carry
    ``replicas=replicas``. Output goes to ``<runs dir>/_torchrun/<experiment>/<time>.log``; a failure raises with
    its tail."""
    from racecar_core.files import atomic_write
    from racecar_repro import paths
    from racecar_repro.notebook_runner import cpu_threads
    keys = [s.key for s in specs]
    if not keys:
        return []
    folder = paths.runs_dir() / "_torchrun" / exp.name
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    blob, log = folder / f"{stamp}.pkl", folder / f"{stamp}.log"
    payload = _payload(exp, params, specs)
    atomic_write(blob, lambda t: Path(t).write_bytes(payload))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cpu_threads() // replicas))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={replicas}",
           "-m", "racecar_repro.executors", str(blob), *keys]
    if report is not None:
        report(f"[{exp.name}] torchrun: {len(keys)} run(s), each on {replicas} processes (log {log})")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    blob.unlink(missing_ok=True)
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise RuntimeError(f"racecar: torchrun failed (exit {code}) training {list(keys)}; log {log}:\n{tail}")
    if report is not None:
        report(f"[{exp.name}] torchrun: {len(keys)} run(s) trained in {time.perf_counter() - t0:.1f} s")
    return list(keys)


# ------------------------------------------------------------------------------------------------ Slurm (submitit)
SLURM_KEYS = {"partition": str, "account": str, "qos": str, "timeout_min": int, "gpus_per_node": int,
              "cpus_per_task": int, "mem_gb": int, "additional": dict}


def slurm_settings() -> dict[str, Any]:
    """The user's Slurm settings: the JSON file ``RACECAR_SLURM_SETTINGS`` (default ``~/.config/racecar/slurm.json``),
    then ``RACECAR_SLURM_<KEY>`` environment variables; keys ``SLURM_KEYS`` (``additional``: extra sbatch options as
    a dict)."""
    path = Path(os.environ.get("RACECAR_SLURM_SETTINGS", Path.home() / ".config" / "racecar" / "slurm.json"))
    out: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    unknown = sorted(set(out) - set(SLURM_KEYS))
    if unknown:
        raise ValueError(f"racecar: unknown Slurm setting(s) {unknown} in {path}; known: {sorted(SLURM_KEYS)}")
    for key, kind in SLURM_KEYS.items():
        value = os.environ.get(f"RACECAR_SLURM_{key.upper()}")
        if value is not None:
            try:
                out[key] = json.loads(value) if kind is dict else kind(value)
            except ValueError:
                raise ValueError(f"racecar: RACECAR_SLURM_{key.upper()}={value!r} is not {_KIND_WORDS[kind]}") from None
    for key, value in out.items():
        kind, least = SLURM_KEYS[key], 0 if key == "gpus_per_node" else 1
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < least):
            raise ValueError(f"racecar: Slurm setting {key}={value!r} must be {_KIND_WORDS[kind]}"
                             + (f" of at least {least}" if kind is int else "")
                             + (" (Slurm reads --mem=0 as the whole node)" if key == "mem_gb" else ""))
    return out


_KIND_WORDS = {str: "a string", int: "a whole number", dict: "a JSON object of sbatch options"}


RESOURCE_KEYS = ("gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min")
DEFAULT_RESOURCES = {"cpus_per_task": 1, "timeout_min": 24 * 60}


def job_resources(exp: Any, profile: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """What one run's job asks for: ``DEFAULT_RESOURCES``, then the experiment's own for the profile
    (``Experiment.resources``), then the user's settings (``slurm_settings``), which know their cluster best."""
    settings = slurm_settings() if settings is None else settings
    out = {**DEFAULT_RESOURCES, **getattr(exp, "resources", {}).get(profile, {}),
           **{k: settings[k] for k in RESOURCE_KEYS if k in settings}}
    bad = {k: v for k, v in out.items()
           if k in RESOURCE_KEYS and (not float(v).is_integer() or v < (k != "gpus_per_node"))}
    if bad:
        raise ValueError(f"racecar: job resources {bad} must be whole numbers of at least 1 (gpus_per_node: 0)")
    return {k: int(v) for k, v in out.items() if k in RESOURCE_KEYS and (k != "gpus_per_node" or v)}


class _Job:
    """One run as a submitit job: trains it into the run cache; requeued after pre-emption or a time limit
    (``checkpoint``), it resumes from the run's own checkpoint. With ``replicas`` > 1 the job's tasks (one per GPU)
    form the run's process group."""

    def __init__(self, threads: int, replicas: int = 1) -> None:
        self.threads, self.replicas = threads, replicas

    def __call__(self, blob: bytes, key: str) -> str:
        import torch
        torch.set_num_threads(self.threads)
        if self.replicas == 1:
            return _train_one(blob, key)
        import submitit
        # MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from the job's tasks; every task sees the node's GPUs and
        # takes cuda:LOCAL_RANK
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        _train_in_group(blob, [key])
        return key

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


LOST_S = 300.0    # a job the scheduler has not listed this long after its submission is taken as lost
QUEUED = ("PENDING", "QUEUED", "READY", "REQUEUED", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED")
ACTIVE = (*QUEUED, "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "STAGE_OUT", "SIGNALING")


def _job_state(job: Any) -> str:
    """The scheduler's state of ``job``, upper case; a local job re-attached in another process (submitit knows only
    its own children) is RUNNING while its process (the job id is its pid) lives, else FINISHED or LOST."""
    state = str(job.state).upper()
    if state.startswith("NO PROCESS"):
        try:
            os.kill(int(str(job.job_id).split("_")[0]), 0)
        except (ValueError, ProcessLookupError, PermissionError):
            return "FINISHED" if job.paths.result_pickle.exists() else "LOST"
        return "RUNNING"
    return state


def _log(job: Any) -> str:
    """Where a job's error log is, or that it has none (a job cancelled before it started)."""
    path = Path(job.paths.stderr)
    return f"log {path}" if path.exists() else "no log: the job never started"


def _killed_for_memory(job: Any) -> bool:
    """Whether Slurm's own words in the job's error log say it killed the job for its memory (the state is
    OUT_OF_MEMORY under cgroup enforcement, but FAILED or CANCELLED under jobacct_gather's OverMemoryKill)."""
    path = Path(job.paths.stderr)
    text = path.read_text(errors="replace")[-20000:].lower() if path.is_file() else ""
    return "exceeded job memory limit" in text or "oom-kill" in text or "exceeded memory limit" in text


def _sbatch_options(job: Any) -> str:
    """The ``#SBATCH`` options of a Slurm job's submission script, as sbatch got them ("" for a local job)."""
    path = Path(getattr(job.paths, "submission_file", ""))
    if not path.is_file():
        return ""
    return " ".join(line.split(None, 1)[1] for line in path.read_text().splitlines()
                    if line.startswith("#SBATCH") and " " in line and "--output" not in line and "--error" not in line)


def _progress(run_folder: Path) -> tuple[int, int, float] | None:
    """Steps done, steps in all and seconds spent, summed over the ``progress.json`` files the run's loops wrote (at
    each checkpoint); None before the first."""
    done = total = spent = 0.0
    found = False
    for f in run_folder.rglob("progress.json") if run_folder.exists() else []:
        try:
            p = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        found = True
        done, total, spent = done + p["step"], total + p["steps"], spent + p["wall_time"]
    return (int(done), int(total), spent) if found else None


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def status_table(rows: list[dict[str, Any]]) -> str:
    """The live table: one line per run (key, state, job, steps done, ETA from the run's own pace) and the counts."""
    counts = {s: sum(r["state"] == s for r in rows) for s in ("queued", "running", "done", "failed")}
    width = max([len(r["key"]) for r in rows] + [3])
    lines = [f"{'run':<{width}}  {'state':<8} {'job':<14} {'progress':<16} ETA"]
    for r in rows:
        prog, eta = "", ""
        if r.get("progress") and r["state"] == "running":
            done, total, spent = r["progress"]
            prog = f"{done}/{total} steps"
            if done:
                eta = _eta(spent / done * (total - done))
        lines.append(f"{r['key']:<{width}}  {r['state']:<8} {str(r.get('job') or ''):<14} {prog:<16} {eta}".rstrip())
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items()))
    return "\n".join(lines)


def train_with_submitit(exp: Any, params: dict[str, Any], specs: Sequence[Any],
                        report: Callable[[str], None] | None = print, poll_s: float | None = None,
                        folders: dict[str, Any] | None = None, resubmit: bool | None = None) -> list[str]:
    """Train the runs ``specs`` (run folders ``folders[key]``) through submitit (Slurm, or ``RACECAR_CLUSTER=local``),
    wait with a live ``status_table`` (reported when a state changes, else every ``RACECAR_SUBMITIT_TABLE_S``), and
    return the keys.

    Resumable: the jobs are recorded in ``<runs dir>/_submitit/<experiment>/jobs.json``, so that calling again after
    a disconnect re-attaches to jobs still queued or running instead of submitting them twice; finished runs come
    from the run cache. A run whose earlier job ended without a result is listed with the job's log and submitted
    again only on request (``resubmit=True``, ``RACECAR_RESUBMIT=1``, ``make figures ... RESUBMIT=1``). Runs that
    fail raise at the end, with their logs."""
    import submitit

    from racecar_core.files import write_json
    from racecar_repro import paths
    keys = [s.key for s in specs]
    if not keys:
        return []
    poll_s = poll_s if poll_s is not None else float(os.environ.get("RACECAR_SUBMITIT_POLL_S", 10))
    lost_s = float(os.environ.get("RACECAR_SUBMITIT_LOST_S", LOST_S))
    table_s = float(os.environ.get("RACECAR_SUBMITIT_TABLE_S", 60))
    resubmit = resubmit if resubmit is not None else os.environ.get("RACECAR_RESUBMIT", "") not in ("", "0")
    root = paths.runs_dir()
    folders = {k: Path(folders[k]) if folders and k in folders else root / exp.name / k for k in keys}
    rel = {k: str(f.relative_to(root)) if f.is_relative_to(root) else str(f) for k, f in folders.items()}
    settings = slurm_settings()
    folder = root / "_submitit" / exp.name
    executor = submitit.AutoExecutor(folder=folder, cluster=os.environ.get("RACECAR_CLUSTER") or None)
    job_class = submitit.SlurmJob if executor.cluster == "slurm" else submitit.LocalJob
    manifest_path = folder / "jobs.json"
    manifest: dict[str, dict] = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    tracked: dict[str, Any] = {}                      # key -> submitit job being waited on
    submitted: dict[str, float] = {}                  # key -> when its job was submitted (epoch seconds)

    def finished(key: str) -> bool:
        return (folders[key] / "result.pt").exists()

    def state_of(key: str) -> str:
        """queued, running, done or failed (a job that ended without the run's result, or no job)."""
        if finished(key):
            return "done"
        if key not in tracked:                        # an earlier failure, not resubmitted
            return "failed"
        s = _job_state(tracked[key])
        if s == "UNKNOWN":     # not yet in the scheduler's accounting, or never will be (cancelled while pending)
            return "queued" if time.time() - submitted.get(key, 0.0) < lost_s else "failed"
        return "queued" if s in QUEUED else "running" if s in ACTIVE else "failed"

    def why(job: Any) -> str:
        """The scheduler's state of a job that ended without the run's result, and what submitit says of it."""
        state = _job_state(job)
        if not job.done():      # result() would wait for ever on a job the scheduler does not list
            return (f"{state}: not known to the scheduler {lost_s:.0f} s after submission (RACECAR_SUBMITIT_LOST_S), "
                    "taken as lost; a job cancelled while pending is never listed by sacct")
        if state == "OUT_OF_MEMORY" or _killed_for_memory(job):
            return (f"{state}: the job used more memory than it asked for and Slurm killed it; ask for more "
                    "(RACECAR_SLURM_MEM_GB, or mem_gb in the Slurm settings file)")
        if not job.paths.result_pickle.exists():   # killed before submitit could write what happened
            return f"{state}: no outcome written"
        try:
            job.result()
            return f"{state}: ended without a result"
        except Exception as exc:  # submitit raises FailedJobError etc. with the job's traceback
            return f"{state}: {type(exc).__name__}"

    failed: list[str] = []
    for key in keys:
        entry = manifest.get(rel[key])
        if entry is None or finished(key):
            continue
        tracked[key] = job_class(folder=Path(entry["folder"]), job_id=entry["job_id"])
        submitted[key] = float(entry.get("epoch", 0.0))
        if state_of(key) not in ("queued", "running"):
            job = tracked.pop(key)
            if not resubmit:
                failed.append(f"{key} (job {entry['job_id']}: {_job_state(job)}; {_log(job)})")
    to_submit = [k for k in keys if k not in tracked and not finished(k) and (resubmit or rel[k] not in manifest)]
    if report is not None and tracked:
        report(f"[{exp.name}] re-attached to {len(tracked)} job(s) still queued or running: "
               + ", ".join(f"{k} ({j.job_id})" for k, j in tracked.items()))
    if to_submit:
        resources = job_resources(exp, params["profile"], settings)
        replicas = int(params.get("replicas") or 1)
        if replicas > 1:          # one run on several GPUs: one task per GPU in the run's job
            resources["tasks_per_node"] = replicas
            if resources.get("gpus_per_node"):
                resources["gpus_per_node"] = max(resources["gpus_per_node"], replicas)
        slurm = {f"slurm_{k}": settings[k] for k in ("partition", "account", "qos") if k in settings}
        if settings.get("additional"):
            slurm["slurm_additional_parameters"] = settings["additional"]
        executor.update_parameters(name=f"racecar-{exp.name}", **resources, **slurm)
        blob = _payload(exp, params, [s for s in specs if s.key in to_submit])
        job = _Job(resources["cpus_per_task"], replicas)
        try:
            jobs = executor.map_array(job, [blob] * len(to_submit), list(to_submit))
        except Exception as exc:   # sbatch refused: a partition, account or limit the cluster does not have
            detail = " ".join(str(exc).split())[-600:]
            raise RuntimeError(f"racecar: {executor.cluster} refused the jobs of {exp.name}: {detail}. Check the "
                               f"Slurm settings {settings or '(none)'} (RACECAR_SLURM_* or "
                               f"{os.environ.get('RACECAR_SLURM_SETTINGS', '~/.config/racecar/slurm.json')})") from None
        for key, j in zip(to_submit, jobs):
            tracked[key], submitted[key] = j, time.time()
            manifest[rel[key]] = {"key": key, "job_id": str(j.job_id), "folder": str(j.paths.folder),
                                  "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"), "epoch": submitted[key]}
        write_json(manifest_path, manifest)
        if report is not None:
            report(f"[{exp.name}] submitted {len(to_submit)} run(s) to {executor.cluster}, each with "
                   + (_sbatch_options(jobs[0]) or ", ".join(f"{k}={v}" for k, v in resources.items()))
                   + f" (jobs in {manifest_path})")
    last, shown = None, 0.0
    while True:
        if executor.cluster == "slurm" and tracked:   # one sacct call per poll (submitit's own pace: up to 10 min)
            next(iter(tracked.values())).watcher.update()
        states = [state_of(key) for key in keys]
        if report is not None and (states != last or time.monotonic() - shown >= table_s):
            rows = [{"key": k, "state": s, "job": tracked[k].job_id if k in tracked else None,
                     "progress": _progress(folders[k]) if s == "running" else None} for k, s in zip(keys, states)]
            report(f"[{exp.name}] submitit ({executor.cluster}):\n{status_table(rows)}")
            last, shown = states, time.monotonic()
        if all(s in ("done", "failed") for s in states):
            break
        time.sleep(poll_s)
    for key, job in tracked.items():
        if not finished(key):
            failed.append(f"{key} (job {job.job_id}: {why(job)}; {_log(job)})")
    if failed:
        raise RuntimeError("racecar: runs failed under submitit: " + "; ".join(failed)
                           + ". Fix the cause and call again with resubmit=True (make figures ... RESUBMIT=1) to "
                           "submit them again; finished runs are reused from the run cache.")
    return list(keys)


if __name__ == "__main__":     # a replica started by train_with_torchrun: python -m racecar_repro.executors BLOB KEY...
    _train_in_group(Path(sys.argv[1]).read_bytes(), sys.argv[2:])
    # Done and written: leave without the interpreter's teardown. In 3 of 50 tries of the torchrun test a gloo
    # replica aborted there, after its last run and the process group's end ("terminate called without an active
    # exception", no Python frame left), and torchrun then reported the whole training as failed.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
