"""What the weather notebook's paper profile costs: one training step of the authors' network, and per epoch.

The network is the paper profile's (``racecar_core.experiments.weather``: 117 input channels, 128 channels, 19
residual blocks, Keras's LeakyReLU and batch-norm settings, dropout 0.1), on a batch of 32 random 32 x 64 fields.
Std, RR with the paper's full reverse pass (``rr_mode="full"``, mean reduction) and RR in the authors' draft form
(``rr_mode="local_padded"``, half the sum of squares) are timed interleaved after a warm-up (the median is reported),
and the ratio to Std is printed; then the cost of one epoch of the paper profile (its training samples over its batch
size) and of one run at the profile's epoch cap. Evaluation and data loading are not included.

Usage: ``python benchmarks/bench_weather.py [--device cpu|cuda] [--rounds N] [--channels C --blocks B]`` (a smaller
network for a quick look; the per-epoch figures then say so).
"""
from __future__ import annotations

import argparse
import copy
import statistics

import pandas as pd
import torch

from racecar_core.experiments import weather
from racecar_core.experiments.grid import build_method
from racecar_core.models import n_parameters, weather_resnet

from bench_methods import Stepper, interleaved_times

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


def benchmark(device: str = "cpu", rounds: int = 3, warmup: int = 1, channels: int | None = None,
              blocks: int | None = None) -> dict:
    """Median step times (ms) of Std and both RR forms on the paper network, ratios, and the paper profile's cost."""
    p = weather.resolve_params("paper", device=device)
    channels, blocks = channels or p["channels"], blocks if blocks is not None else p["blocks"]
    n_in = len(p["input_variables"]) * len(p["offsets_h"]) + 3
    torch.manual_seed(0)
    dev = torch.device(device)
    net = weather_resnet(n_in, 3, channels, blocks, p["dropout"], leaky_slope=p["leaky_slope"],
                         bn_momentum=p["bn_momentum"], bn_eps=p["bn_eps"]).to(dev)
    x, y = torch.randn(p["batch_size"], n_in, 32, 64, device=dev), torch.randn(p["batch_size"], 3, 32, 64, device=dev)
    task = weather.weighted_mse_loss(torch.ones(1, 1, 32, 1))
    steppers = {name: Stepper(name, copy.deepcopy(net), "mse", x, y, lr=p["lr"],
                              method=build_method("RR" if name.startswith("RR") else name,
                                                  {**p, **settings}, task))
                for name, settings in SETTINGS.items()}
    times = interleaved_times(steppers, dev, rounds, warmup)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    samples = training_samples(p)
    steps = samples // p["batch_size"]
    return {"device": str(dev), "threads": torch.get_num_threads(), "rounds": rounds, "inputs": n_in,
            "channels": channels, "blocks": blocks, "parameters": n_parameters(net),
            "paper_network": (channels, blocks) == (p["channels"], p["blocks"]), "ms": ms,
            "ratio": {k: ms[k] / ms["Std"] for k in ms if k != "Std"}, "train_samples": samples,
            "steps_per_epoch": steps, "epochs_cap": p["epochs"], "seeds": len(p["seeds"]),
            "epoch_h": {k: v * steps / 3.6e6 for k, v in ms.items()}}


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
              + f"; the profile trains Std and RR with {r['seeds']} seeds each"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--channels", type=int, default=None)
    ap.add_argument("--blocks", type=int, default=None)
    a = ap.parse_args(argv)
    print(report(benchmark(a.device, a.rounds, 1, a.channels, a.blocks)))


if __name__ == "__main__":
    main()
