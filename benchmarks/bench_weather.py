"""What the weather notebook's paper profile costs: one training step of the authors' network, and per epoch.

The network is the paper profile's (``racecar_repro.experiments.weather``: 117 input channels, 128 channels, 19
residual blocks, Keras's LeakyReLU and batch-norm settings, dropout 0.1), on a batch of 32 random 32 x 64 fields.
Std, RR with the paper's full reverse pass (``rr_mode="full"``, mean reduction) and RR in the authors' draft form
(``rr_mode="local_padded"``, half the sum of squares) are timed interleaved after a warm-up (the median is reported),
and the ratio to Std is printed; then the cost of one epoch of the paper profile (its training samples over its batch
size) and of one run at the profile's epoch cap. Evaluation and data loading are not included. Each step's work is
also counted (``flops.step_flops``): the rate this device reached, and the least time an H100 would need at its
datasheet peak (a lower bound, not an estimate: see ``flops``).

Usage: ``python benchmarks/bench_weather.py [--device cpu|cuda] [--rounds N] [--channels C --blocks B] [--save DIR]``
(``--channels``/``--blocks``: a smaller network for a quick look; the per-epoch figures then say so).
"""
from __future__ import annotations

import argparse
import statistics

import pandas as pd
import torch

from racecar_repro.experiments import weather
from racecar_repro.experiments.params import build_method
from racecar_core.models import n_parameters, weather_resnet

from bench_methods import Stepper, interleaved_times
import record
from flops import H100_PEAK_TFLOPS, achieved_tflops, peak_seconds, step_flops

SETTINGS = {"Std": {}, "RR full": dict(rr_mode="full", rr_reduction="mean"),
            "RR draft": dict(rr_mode="local_padded", rr_reduction="sum")}


def training_samples(p: dict) -> int:
    """How many samples the profile's training years give: every ``sample_every_h`` hours, with the earliest input
    offset and the lead inside the years (as ``WeatherDataset`` counts them)."""
    years = sorted(p["train_years"])
    times = pd.date_range(f"{years[0]}-01-01", f"{years[-1]}-12-31 18:00", freq="6h")
    t = times[(times.hour % p["sample_every_h"]) == 0]
    keep = (t + pd.Timedelta(hours=min(p["offsets_h"])) >= times[0]) & (t + pd.Timedelta(hours=p["lead_h"]) <= times[-1])
    return int(keep.sum())


def make_stepper(p: dict, channels: int, blocks: int, name: str, device: torch.device | None = None) -> Stepper:
    """The step of setting ``name`` on the seeded network and a batch of random fields (the same for every setting);
    built on the CPU by default, which also works inside ``FakeTensorMode`` (for ``step_flops``)."""
    device = device or torch.device("cpu")
    n_in = len(p["input_variables"]) * len(p["offsets_h"]) + 3
    torch.manual_seed(0)
    net = weather_resnet(n_in, 3, channels, blocks, p["dropout"], leaky_slope=p["leaky_slope"],
                         bn_momentum=p["bn_momentum"], bn_eps=p["bn_eps"])
    if device.type != "cpu":   # fake tensors refuse .to(), even to the CPU
        net = net.to(device)
    x = torch.randn(p["batch_size"], n_in, 32, 64, device=device)
    y = torch.randn(p["batch_size"], 3, 32, 64, device=device)
    task = weather.weighted_mse_loss(torch.ones(1, 1, 32, 1, device=device))
    method = build_method("RR" if name.startswith("RR") else name, {**p, **SETTINGS[name]}, task)
    return Stepper(name, net, "mse", x, y, lr=p["lr"], method=method)


def benchmark(device: str = "cpu", rounds: int = 3, warmup: int = 1, channels: int | None = None,
              blocks: int | None = None) -> dict:
    """Median step times (ms) of Std and both RR forms on the paper network, ratios, the counted work per step, and
    the paper profile's cost: measured on this device, and the lower bound on an H100 at its TF32 peak."""
    p = weather.resolve_params("paper", device=device)
    channels, blocks = channels or p["channels"], blocks if blocks is not None else p["blocks"]
    dev = torch.device(device)
    steps_by_name = {name: make_stepper(p, channels, blocks, name, dev) for name in SETTINGS}
    n_in, net = steps_by_name["Std"].x.shape[1], steps_by_name["Std"].model
    flops = {name: step_flops(lambda name=name: make_stepper(p, channels, blocks, name)) for name in SETTINGS}
    times = interleaved_times(steps_by_name, dev, rounds, warmup)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    samples = training_samples(p)
    steps = samples // p["batch_size"]
    precision = "bf16" if p["amp"] else "tf32"
    return {"device": str(dev), "threads": torch.get_num_threads(), "rounds": rounds, "inputs": n_in,
            "channels": channels, "blocks": blocks, "parameters": n_parameters(net),
            "paper_network": (channels, blocks) == (p["channels"], p["blocks"]), "ms": ms,
            "ratio": {k: ms[k] / ms["Std"] for k in ms if k != "Std"}, "train_samples": samples,
            "steps_per_epoch": steps, "epochs_cap": p["epochs"], "seeds": len(p["seeds"]),
            "epoch_h": {k: v * steps / 3.6e6 for k, v in ms.items()},
            "flops": flops, "tflops": {k: achieved_tflops(flops[k], ms[k]) for k in ms}, "precision": precision,
            "h100_epoch_s": {k: peak_seconds(v * steps, precision) for k, v in flops.items()}}


def report(r: dict) -> str:
    """The ratio lines first, then the absolute numbers and the extrapolation."""
    name = "weather paper network" if r["paper_network"] else "weather network (reduced)"
    lines = [f"{name}: {k}/Std step time {v:.2f}" for k, v in r["ratio"].items()]
    net = "the paper's network" if r["paper_network"] else f"NOT the paper's network ({r['channels']} channels, " \
                                                            f"{r['blocks']} blocks)"
    lines += ["", f"device {r['device']}, torch {torch.__version__}, threads {r['threads']}, {r['rounds']} interleaved "
              f"rounds (median), batch 32, {r['inputs']} input channels, {net}: {r['parameters']:,} parameters",
              "median step ms: " + ", ".join(f"{k} {v:.1f}" for k, v in r["ms"].items()),
              f"paper profile: {r['train_samples']:,} training samples = {r['steps_per_epoch']:,} steps per epoch; "
              "one epoch (training steps only): " + ", ".join(f"{k} {v:.2f} h" for k, v in r["epoch_h"].items()),
              f"one run at the cap of {r['epochs_cap']} epochs (early stopping usually ends sooner): "
              + ", ".join(f"{k} {v * r['epochs_cap']:.0f} h" for k, v in r["epoch_h"].items())
              + f"; the profile trains Std and RR with {r['seeds']} seeds each",
              "counted work per step (matrix products and convolutions, forward and backward) and the rate reached "
              "here: " + ", ".join(f"{k} {v / 1e12:.3g} TFLOP at {r['tflops'][k]:.3g} TFLOP/s"
                                   for k, v in r["flops"].items()),
              f"lower bound on one H100 SXM (the counted work at its dense {r['precision'].upper()} peak, "
              f"{H100_PEAK_TFLOPS[r['precision']]} TFLOP/s, which no training run reaches; only a measurement "
              "there gives the time): one epoch at least " + ", ".join(
                  f"{k} {v:.2g} s" for k, v in r["h100_epoch_s"].items())
              + "; one run at the cap at least " + ", ".join(
                  f"{k} {v * r['epochs_cap'] / 60:.2g} min" for k, v in r["h100_epoch_s"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--channels", type=int, default=None)
    ap.add_argument("--blocks", type=int, default=None)
    ap.add_argument("--save", metavar="DIR",
                    help="also keep the output in DIR (make bench-weather: benchmarks/results)")
    a = ap.parse_args(argv)
    text = report(benchmark(a.device, a.rounds, 1, a.channels, a.blocks))
    print(text)
    if a.save:
        print("saved to", record.save(text, "bench-weather", a.device, a.save))


if __name__ == "__main__":
    main()
