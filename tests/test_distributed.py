"""One run on several processes: 2 gloo processes on the CPU train the same numbers as one process with the same
global batch (DDP's gradients, synchronised batch norms), write the run folder from rank 0 only, and resume from its
checkpoint."""
import contextlib
import multiprocessing as mp
import traceback
from pathlib import Path

import pytest
import torch

from racecar_core import distributed, reverse
from racecar_core.methods import make_method
from racecar_core.models import resnet_cifar
from racecar_core.train import TensorBatches, TrainConfig, fit

pytestmark = pytest.mark.integration   # slow or multi-process: `make test`, not `make test-fast`

# a small ResNet with batch norms in every block, the methods with each kind of loss term: averaged over the batch
# (task, RR "mean"), summed over it (RR and Pre "sum"), independent of it (Ort), and RR re-applying batch norms with
# the forward pass's statistics
METHODS = {"Std": {}, "RR-sum": {"lam": 1e-4, "reduction": "sum"},
           "RR-mean-forward-norms": {"lam": 1.0, "reduction": "mean", "norms": "forward"},
           "Ort": {"weight": 0.1}, "Pre": {"pre_steps": 2, "reduction": "sum", "pre_lr_scale": 1e-3}}
STEPS, BATCH = 6, 8
# early stopping on the evaluation's cross-entropy, with Keras's plateau schedule (the weather trainer's loop)
EARLY = {"early_stop": "ce", "patience": 2, "plateau_patience": 1, "plateau_factor": 0.5, "min_delta": 0.1, "steps": 12}


class Crash(RuntimeError):
    pass


class CrashingBatches(TensorBatches):
    """Raises on every replica when asked for step ``crash_at`` (a job killed between two checkpoints)."""

    def __init__(self, *a, crash_at=None, **kw):
        super().__init__(*a, **kw)
        self.crash_at = crash_at

    def batch(self, step):
        if step == self.crash_at:
            raise Crash(f"simulated crash at step {step}")
        return super().batch(step)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 12, 12, generator=g)
    return x, (x[:, 0, :6].mean((1, 2)) > x[:, 0, 6:].mean((1, 2))).long()


@contextlib.contextmanager
def _local_reverse_pass():
    """RR's reverse pass re-applying the batch norms with each replica's own statistics, the forward pass's synced:
    what torch's SyncBatchNorm in the forward pass alone would give."""
    original = reverse.reverse_pass

    def local(*a, **kw):
        with distributed.local_statistics():
            return original(*a, **kw)
    reverse.reverse_pass = local
    try:
        yield
    finally:
        reverse.reverse_pass = original


def _train(name, replicas, run_dir=None, crash_at=None, sync_bn=True, steps=STEPS, reverse_local=False, **schedule):
    spec = dict(METHODS[name])
    method = make_method(name.split("-")[0], **spec)
    x, y = _data()
    torch.manual_seed(0)
    model = resnet_cifar(8, 2, in_channels=1, width=4)
    cfg = TrainConfig(steps=steps, lr=0.05, optimizer="sgd", batch_size=BATCH, eval_every=2, checkpoint_every=2,
                      seed=1, progress=False, replicas=replicas, sync_bn=sync_bn, **schedule)

    def evaluate(m, step):
        return {"acc": (m(x).argmax(1) == y).float().mean(), "ce": torch.nn.functional.cross_entropy(m(x), y)}

    with _local_reverse_pass() if reverse_local else contextlib.nullcontext():
        hist = fit(model, method, CrashingBatches(x, y, BATCH, seed=1, crash_at=crash_at), cfg, run_dir, evaluate)
    return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "lr": [r["lr"] for r in hist["log"]],
            "loss": [r["loss"] for r in hist["log"]], "evals": [e["acc"] for e in hist["evals"]],
            "best_step": hist["best_step"], "stopped_early": hist["stopped_early"]}


def _replica(rank, world, init_file, out, jobs):
    """One process of the group: run every job (name, options) and save what it got."""
    try:
        torch.set_num_threads(1)
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                             world_size=world, timeout=__import__("datetime").timedelta(seconds=120))
        if rank > 0:  # only rank 0 may write a run folder
            import racecar_core.train as train

            def refuse(*a, **kw):
                raise AssertionError(f"rank {rank} wrote a run file")
            train.save_checked = train.atomic_write = refuse
        results = {}
        for key, (name, opts) in jobs.items():
            if opts.get("crash_at") is not None:
                with pytest.raises(Crash):
                    _train(name, world, **opts)
                opts = {k: v for k, v in opts.items() if k != "crash_at"}
            results[key] = _train(name, world, **opts)
        torch.save(results, Path(out) / f"rank{rank}.pt")
    except BaseException:
        (Path(out) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
    finally:
        distributed.shutdown()


def _in_group(tmp_path, jobs, world=2):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_replica, args=(r, world, tmp_path / "init", str(tmp_path), jobs))
             for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    errors = [f.read_text() for f in sorted(tmp_path.glob("rank*.error"))]
    assert not errors, "\n".join(errors)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


def _close(a, b, tol=2e-5):
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            torch.testing.assert_close(a[k], b[k], rtol=tol, atol=tol, msg=lambda m, k=k: f"{k}: {m}")
        else:
            assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """Every method on 2 replicas (plus an interrupted-and-resumed RR and unsynchronised batch norms), once."""
    tmp = tmp_path_factory.mktemp("ddp")
    jobs = {name: (name, {}) for name in METHODS}
    jobs["resumed"] = ("RR-sum", {"run_dir": str(tmp / "run"), "crash_at": 3})
    jobs["local-bn"] = ("RR-sum", {"sync_bn": False})
    jobs["early"] = ("RR-sum", EARLY)
    jobs["reverse-local"] = ("RR-sum", {"reverse_local": True})
    return tmp, _in_group(tmp, jobs)


@pytest.mark.parametrize("name", list(METHODS))
def test_two_replicas_train_what_one_process_trains(group, name):
    tmp, (r0, r1) = group
    one = _train(name, 1)
    _close(r0[name]["state"], one["state"])            # weights and the batch norms' moving averages
    _close(r1[name]["state"], r0[name]["state"], 0)    # the replicas agree exactly
    torch.testing.assert_close(torch.tensor(r0[name]["loss"]), torch.tensor(one["loss"]), rtol=1e-5, atol=1e-6)
    assert r0[name]["evals"] == pytest.approx(one["evals"])


def test_resume_on_two_replicas_from_rank_0s_checkpoint(group):
    tmp, (r0, r1) = group
    assert (tmp / "run" / "checkpoint.pt").exists()     # written by rank 0 (rank 1's writes raise)
    one = _train("RR-sum", 1)
    _close(r0["resumed"]["state"], one["state"])
    _close(r1["resumed"]["state"], r0["resumed"]["state"], 0)


def test_early_stopping_and_the_plateau_schedule_follow_rank_0s_evaluation(group):
    tmp, (r0, r1) = group
    one = _train("RR-sum", 1, **EARLY)
    assert one["stopped_early"] and len(set(one["lr"])) > 1       # the setting exercises both
    for r in (r0, r1):                                             # every replica: rank 0's records and best weights
        assert (r["early"]["stopped_early"], r["early"]["best_step"]) == (True, one["best_step"])
        assert r["early"]["lr"] == pytest.approx(one["lr"]) and r["early"]["evals"] == pytest.approx(one["evals"])
        _close(r["early"]["state"], one["state"])


def test_unsynchronised_batch_norms_are_a_different_training(group):
    tmp, (r0, r1) = group
    _close(r1["local-bn"]["state"], r0["local-bn"]["state"], 0)   # rank 0's moving averages handed to all
    assert _largest_difference(r0["local-bn"]["state"], _train("RR-sum", 1)["state"]) > 1e-4


def _largest_difference(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in b if b[k].is_floating_point())


def test_rr_needs_its_reverse_pass_batch_norms_synchronised_too(group):
    """Why the synchronised batch norm is hand-written rather than torch's SyncBatchNorm (racecar_core.distributed):
    with the forward pass's batch norms synced but the reverse pass re-applying them with each replica's own
    statistics, RR trains something else than one process does."""
    tmp, (r0, r1) = group
    one = _train("RR-sum", 1)
    assert _largest_difference(r0["reverse-local"]["state"], one["state"]) > 1e-4
    _close(r0["RR-sum"]["state"], one["state"])


def test_torch_sync_batch_norm_refuses_cpu_tensors(tmp_path):
    """The other reason: under a gloo group (the CPU), torch's SyncBatchNorm does not run at all."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="expected input tensor to be on GPU"):
            torch.nn.SyncBatchNorm(3).train()(torch.randn(4, 3))
    finally:
        distributed.shutdown()


def test_a_run_set_up_for_several_replicas_refuses_one_process():
    with pytest.raises(ValueError, match="torchrun --nproc-per-node 2"):
        _train("Std", 2)


def test_shard_needs_a_divisible_batch():
    x = torch.zeros(10, 3)
    a, _ = distributed.shard(x, x, 2, 1)
    assert len(a) == 5
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        distributed.shard(x, x, 3, 0)


def test_data_parallel_settings_enter_the_run_key_only_with_replicas():
    assert "replicas" not in TrainConfig(steps=1).describe()
    d = TrainConfig(steps=1, replicas=4, sync_bn=False).describe()
    assert d["replicas"] == 4 and d["sync_bn"] is False
