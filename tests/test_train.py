"""The training loop: determinism, kill-and-resume, run cache, NaN guard."""
import copy
import shutil

import pytest
import torch
from torch import nn

from racecar_repro import runs
from racecar_core.methods import make_method
from racecar_core.models import peak_mlp
from racecar_core.train import TensorBatches, TrainConfig, fit


def _data(n=24):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=g)
    return x, (x[:, 0, :14].mean((1, 2)) > x[:, 0, 14:].mean((1, 2))).long()


def _train(run_dir=None, method="RR", steps=12, stop_at=None, lr=1e-3, nan_inputs=False, **kw):
    x, y = _data()
    if nan_inputs:  # the loss is NaN at the first step
        x = torch.full_like(x, float("nan"))
    torch.manual_seed(0)
    model = peak_mlp()
    cfg = TrainConfig(steps=steps, lr=lr, batch_size=8, eval_every=4, checkpoint_every=4, seed=3, progress=False)

    def evaluate(m, step):
        if stop_at is not None and step == stop_at:
            raise KeyboardInterrupt("simulated crash")
        return {"acc": (m(x).argmax(1) == y).float().mean()}

    hist = fit(model, make_method(method, lam=1e-3, **kw) if method == "RR" else make_method(method, **kw),
               TensorBatches(x, y, 8, seed=3), cfg, run_dir, evaluate)
    return model, hist


@pytest.mark.parametrize("method", ["RR", "Ort", "Pre"])
def test_kill_and_resume_gives_identical_weights(tmp_path, method):
    kw = {"pre_steps": 4} if method == "Pre" else {}
    ref, ref_hist = _train(None, method, **kw)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, method, stop_at=8 if method != "Pre" else 12, **kw)
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "metrics.json").exists()
    assert not list(tmp_path.glob("*.csv"))          # one log format per run
    resumed, hist = _train(tmp_path, method, **kw)
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert [e["acc"] for e in hist["evals"]] == [e["acc"] for e in ref_hist["evals"]]


def test_a_damaged_checkpoint_is_set_aside_and_the_run_starts_again(tmp_path):
    from racecar_core.train import DamagedCheckpointWarning
    ref, ref_hist = _train(None, "RR")
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, "RR", stop_at=8)
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:-50])                      # a job killed mid-write on a network filesystem
    with pytest.warns(DamagedCheckpointWarning, match="training from the start"):
        again, hist = _train(tmp_path, "RR")
    for (k, a), b in zip(ref.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    assert [e["acc"] for e in hist["evals"]] == [e["acc"] for e in ref_hist["evals"]]
    assert list(tmp_path.glob("checkpoint.pt.damaged-*"))


def test_same_seed_same_numbers_and_logs():
    a, ha = _train(None, "Std")
    b, hb = _train(None, "Std")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert [r["loss"] for r in ha["log"]] == [r["loss"] for r in hb["log"]]
    assert {"step", "phase", "lr", "loss", "task"} <= set(ha["log"][0])


def test_nan_loss_stops_with_step(tmp_path):
    with pytest.raises(FloatingPointError, match=r"loss is (nan|inf) at step \d+"):
        _train(tmp_path, "Std", steps=3, nan_inputs=True)


def test_cached_run_is_not_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("RACECAR_RUNS_DIR", str(tmp_path))
    calls = []

    def train(run_dir):
        calls.append(run_dir)
        return {"value": torch.tensor([1.0, 2.0]), "acc": 0.5}

    cfg = {"lr": 1e-3, "method": "RR"}
    first = runs.cached_run("exp", cfg, train)
    second = runs.cached_run("exp", cfg, train)
    assert len(calls) == 1 and not first["cached"] and second["cached"]
    assert torch.equal(second["value"], first["value"])
    assert runs.load_config(calls[0]) == cfg
    runs.cached_run("exp", {**cfg, "lr": 2e-3}, train)
    assert len(calls) == 2
    assert runs.config_hash(cfg) == runs.config_hash(dict(reversed(list(cfg.items()))))


def test_batches_are_a_function_of_step():
    x, y = _data()
    b = TensorBatches(x, y, 8, seed=1)
    first = [b.batch(s)[1] for s in range(6)]
    again = TensorBatches(x, y, 8, seed=1)
    assert all(torch.equal(first[s], again.batch(s)[1]) for s in (5, 2, 0))
    with pytest.raises(ValueError, match="inputs but"):
        TensorBatches(x, y[:3], 8, seed=1)


def test_unknown_optimizer():
    x, y = _data()
    with pytest.raises(ValueError, match="optimizer"):
        fit(peak_mlp(), make_method("Std"), TensorBatches(x, y, 8, 0),
            TrainConfig(steps=1, optimizer="lbfgs", progress=False))


def test_wrong_input_shape_is_a_clear_error():
    x = torch.rand(8, 1, 32, 32)
    with pytest.raises(ValueError, match=r"cannot take inputs of shape \(1, 32, 32\)"):
        fit(peak_mlp(), make_method("Std"), TensorBatches(x, torch.zeros(8).long(), 4, 0),
            TrainConfig(steps=1, progress=False))


def test_early_stopping_keeps_the_best_weights(tmp_path):
    x, y = _data()
    torch.manual_seed(0)
    model = peak_mlp()
    seen = {}

    def evaluate(m, step):  # best at step 4, worse afterwards
        seen[step] = {k: v.clone() for k, v in m.state_dict().items()}
        return {"val": abs(step - 4)}

    cfg = TrainConfig(steps=40, lr=1e-2, batch_size=8, eval_every=2, seed=0, progress=False, early_stop="val",
                      patience=3)
    hist = fit(model, make_method("Std"), TensorBatches(x, y, 8, 0), cfg, tmp_path, evaluate)
    assert hist["stopped_early"] and hist["best_step"] == 4 and hist["steps"] == 10
    for k, v in model.state_dict().items():
        assert torch.equal(v, seen[4][k]), k


def test_a_non_finite_early_stopping_metric_stops_the_run_with_a_clear_error(tmp_path):
    x, y = _data()
    cfg = TrainConfig(steps=10, lr=1e-2, batch_size=8, eval_every=2, seed=0, progress=False, early_stop="val",
                      patience=3)
    with pytest.raises(FloatingPointError, match="early-stopping metric 'val' is nan at step 0"):
        fit(peak_mlp(), make_method("Std"), TensorBatches(x, y, 8, 0), cfg, tmp_path,
            lambda m, step: {"val": float("nan")})


def test_early_stopping_waits_for_fine_tuning(tmp_path):
    # Pre's pretraining phases do not move the task metric; they must not count against the patience
    x, y = _data()
    torch.manual_seed(0)
    method = make_method("Pre", task="ce", pre_steps=6)
    cfg = TrainConfig(steps=10, lr=1e-2, batch_size=8, eval_every=1, seed=0, progress=False, early_stop="val",
                      patience=2)
    hist = fit(peak_mlp(), method, TensorBatches(x, y, 8, 0), cfg, tmp_path, lambda m, step: {"val": 1.0})
    pretraining = 6 * 2  # peak_mlp has two weight layers
    assert hist["stopped_early"] and hist["best_step"] == pretraining and hist["steps"] == pretraining + 2


def test_random_streams_are_distinct_and_fixed():
    from racecar_core.train import stream_seed
    seeds = {stream_seed(s, i, k) for s in range(3) for i in range(50) for k in ("order", "augment", "step", "method")}
    assert len(seeds) == 3 * 50 * 4 and all(0 <= v < 2 ** 63 for v in seeds)
    assert stream_seed(1, 0, "method") == stream_seed(1, 0, "method") != stream_seed(0, 7919, "method")


def test_config_describe_leaves_out_progress_and_an_unused_compile():
    cfg = TrainConfig(steps=3)
    assert "progress" not in cfg.describe() and "compile" not in cfg.describe()
    assert TrainConfig(steps=3, compile=True).describe()["compile"] is True


@pytest.mark.parametrize("name, kw", [
    ("RR", dict(lam=1e-2, mode="full", reduction="mean", reverse_bn_update=False)),
    ("Ort", dict(weight=1e-2, form="srip", schedule=True)),
])
@pytest.mark.integration
def test_compiled_step_gives_the_eager_numbers(name, kw):
    # aot_eager runs dynamo and AOTAutograd (the compile path) with eager kernels: the numbers must not move. A
    # one-block residual net with batch norms (the CIFAR ResNet-8 took twice as long to trace, for the same checks)
    from racecar_core.layers import Residual
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))
    block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
    base = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), Residual(block),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    states = []
    for backend in (False, "aot_eager"):
        model = copy.deepcopy(base)
        fit(model, make_method(name, task="ce", **kw), TensorBatches(x, y, 8, 0),
            TrainConfig(steps=4, lr=0.1, optimizer="sgd", progress=False, compile=backend, eval_every=100))
        states.append(model.state_dict())
    for k in states[0]:
        torch.testing.assert_close(states[1][k], states[0][k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.integration
def test_rr_step_traces_as_one_graph():
    # the whole RR loss (forward, the graph walk through residual additions, fan-outs, cats, permutes and pooling,
    # BN statistics left alone) must trace without graph breaks, or torch.compile cannot fuse it
    from racecar_core.methods import StepInfo
    from racecar_core.models import resnet_cifar, weather_resnet
    from racecar_repro.torchvision_nets import from_torchvision
    from test_reverse import Mixer, UNet
    torch._dynamo.reset()
    cases = ((resnet_cifar(8, 10), torch.randn(2, 3, 32, 32), "ce"),
             (weather_resnet(5, 2, 8, 1), torch.randn(2, 5, 16, 32), "mse"),
             (from_torchvision("resnet18", 10, 1), torch.randn(2, 1, 32, 32), "ce"),
             (UNet(), torch.randn(2, 1, 16, 16), "mse"),
             (Mixer(), torch.randn(2, 1, 16, 16), "ce"))
    for model, x, task in cases:
        phase = make_method("RR", task=task, lam=1e-2, mode="full", reduction="mean",
                            reverse_bn_update=False).phases(model, 1)[0]
        with torch.no_grad():
            out = model(x)
        y = torch.randint(0, 10, (2,)) if task == "ce" else torch.randn_like(out)
        explained = torch._dynamo.explain(phase.loss)(model, x, y, StepInfo(0, 0, 0))
        assert explained.graph_break_count == 0, [str(r.reason)[:200] for r in explained.break_reasons]
    torch._dynamo.reset()


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="inductor needs a C++ compiler")
@pytest.mark.parametrize("name, kw", [("Std", {}), ("RR", dict(lam=1e-2, reduction="mean")), ("Ort", dict(weight=1e-2)),
                                      ("Pre", {})])
@pytest.mark.integration
def test_inductor_step_has_the_eager_gradients(name, kw):
    # what compile=True runs; guards a torch 2.14 inductor pitfall (a loss aliasing the task loss lost its grad_fn)
    from racecar_core.methods import StepInfo
    from racecar_core.train import compiled_loss
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 2, (16,))
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    grads = []
    torch._dynamo.reset()
    for backend in (False, True):
        model = copy.deepcopy(net)
        phase = make_method(name, task="ce", **kw).phases(model, 2)[0]
        loss = compiled_loss(phase, backend)(model, x, y, StepInfo(0, 0, 0, torch.Generator().manual_seed(0)))[0]
        assert loss.requires_grad
        loss.backward()
        grads.append([p.grad for p in phase.params])
    torch._dynamo.reset()
    for eager, compiled in zip(*grads):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_the_learning_rate_drops_on_a_plateau_and_stops_at_its_floor(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    model = nn.Sequential(nn.Linear(4, 2))
    scores = iter([1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    cfg = TrainConfig(steps=10, lr=1e-2, batch_size=16, eval_every=1, progress=False, early_stop="v", patience=99,
                      plateau_patience=2, plateau_factor=0.2, plateau_min_lr=1e-3, min_delta=1e-4)
    hist = fit(model, make_method("Std"), TensorBatches(x, y, 16, 0), cfg, None, lambda m, s: {"v": next(scores)},
               log_every=1)
    lrs = [round(e["lr"], 10) for e in hist["log"]]
    # evaluations 0..: 1.0 (best), 0.5 (best), then no improvement: after 2 of them x0.2, after 2 more the floor
    assert lrs[:3] == [1e-2] * 3 and lrs[3:5] == [2e-3] * 2 and lrs[5:] == [1e-3] * 5
