"""WeatherBench (input, target) tensors: ``WeatherDataset`` serves normalised pairs, ``to_xarray`` denormalises back.
Opening the data and ``Normalizer``: ``racecar_repro.data.weatherbench``."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import xarray as xr

from racecar_repro.data.weatherbench import (CONSTANTS, DEFAULT_VARIABLES, Normalizer, check_finite,
                                            open_constants, open_weatherbench, var_spec)


def _normalised(ds: xr.Dataset, channels: Sequence[str], norm: Normalizer, time_idx: np.ndarray) -> np.ndarray:
    """Load ``channels`` at ``time_idx`` as normalised float32 ``[T, C, lat, lon]``; NaNs are errors."""
    sub = ds[list(channels)].isel(time=time_idx)
    arr = np.stack([(sub[c].values.astype(np.float64) - norm.mean[c]) / norm.std[c] for c in channels], axis=1)
    if not np.isfinite(arr).all():
        check_finite(sub)
    return arr.astype(np.float32)


class WeatherDataset(torch.utils.data.Dataset):
    """Normalised float32 pairs: x = variables at t + offsets, then constants; y = targets at t + lead; [C, lat, lon]."""

    def __init__(self, ds: xr.Dataset, normalizer: Normalizer, constants: xr.Dataset | None = None,
                 input_vars: Sequence[str] = DEFAULT_VARIABLES, target_vars: Sequence[str] = DEFAULT_VARIABLES,
                 input_offsets_h: Sequence[int] = (0, -6, -12), lead_h: int = 72, sample_every_h: int = 12,
                 in_memory: bool | None = None, max_memory_bytes: int = 4 * 2 ** 30):
        self.input_vars = [var_spec(v).channel for v in input_vars]
        self.target_vars = [var_spec(v).channel for v in target_vars]
        self.channels = self.input_vars + [c for c in self.target_vars if c not in self.input_vars]
        absent = [c for c in self.channels if c not in ds.data_vars or c not in normalizer.mean]
        if absent:
            raise ValueError(f"channel(s) {absent} missing from the data ({list(ds.data_vars)}) or the normaliser")
        self.offsets, self.lead_h, self.sample_every_h = [int(o) for o in input_offsets_h], int(lead_h), int(sample_every_h)
        self.normalizer, self.attrs, self.lat, self.lon = normalizer, dict(ds.attrs), ds.lat, ds.lon
        times = ds.time.values
        hours = (times - np.datetime64("1970-01-01")) // np.timedelta64(1, "h")
        cand = hours[hours % self.sample_every_h == 0]

        def lookup(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pos = np.clip(np.searchsorted(hours, h), 0, len(hours) - 1)
            return pos, hours[pos] == h

        ins = [lookup(cand + o) for o in self.offsets]
        tgt, ok = lookup(cand + self.lead_h)
        ok = ok & np.all([k for _, k in ins], axis=0)
        if not ok.any():
            raise ValueError(f"no samples: data {str(times[0])[:13]}..{str(times[-1])[:13]} ({len(times)} steps) hold no "
                             f"t (every {sample_every_h} h) with t{self.offsets} h and t+{lead_h} h all present")
        in_idx, tgt_idx = np.stack([p for p, _ in ins], axis=1)[ok], tgt[ok]
        self.init_times = (np.datetime64("1970-01-01T00", "h") + cand[ok].astype("timedelta64[h]")).astype(times.dtype)
        self.valid_times = times[tgt_idx]
        needed = np.unique(np.concatenate([in_idx.ravel(), tgt_idx]))
        nbytes = needed.size * len(self.channels) * ds.lat.size * ds.lon.size * 4
        self.in_memory = nbytes <= max_memory_bytes if in_memory is None else bool(in_memory)
        if self.in_memory:
            self._data = torch.from_numpy(_normalised(ds, self.channels, normalizer, needed))
            self._in_idx = torch.from_numpy(np.searchsorted(needed, in_idx))
            self._tgt_idx = torch.from_numpy(np.searchsorted(needed, tgt_idx))
            self._ds = None
        else:
            self._ds, self._data = ds, None
            self._in_idx, self._tgt_idx = torch.from_numpy(in_idx), torch.from_numpy(tgt_idx)
        self._const = torch.zeros(0, ds.lat.size, ds.lon.size)
        if constants is not None:
            c = np.stack([constants[k].values.astype(np.float64) for k in CONSTANTS])
            c = (c - c.mean(axis=(1, 2), keepdims=True)) / c.std(axis=(1, 2), keepdims=True).clip(1e-12)
            self._const = torch.from_numpy(c.astype(np.float32))
        self.input_channels = [f"{c}@{o:+d}h" for o in self.offsets for c in self.input_vars] + \
            (list(CONSTANTS) if constants is not None else [])

    @classmethod
    def from_root(cls, root: str | Path | None, years: Sequence[int], train_years: Sequence[int] | None = None,
                  input_vars: Sequence[str] = DEFAULT_VARIABLES, target_vars: Sequence[str] = DEFAULT_VARIABLES,
                  input_offsets_h: Sequence[int] = (0, -6, -12), lead_h: int = 72, sample_every_h: int = 12,
                  constants: bool = True, **kw) -> WeatherDataset:
        """Open ``years`` under ``root`` (only the time steps needed), normalise with ``train_years``' statistics."""
        chans = list(dict.fromkeys(var_spec(v).channel for v in (*input_vars, *target_vars)))
        step = math.gcd(*[int(h) for h in (*input_offsets_h, lead_h, sample_every_h)]) or 1  # read only those hours
        ds = open_weatherbench(root, chans, years, step_hours=step)
        norm = Normalizer.for_training(root, train_years or years, chans, step_hours=step)
        const = open_constants(root, like=ds) if constants else None
        return cls(ds, norm, const, input_vars, target_vars, input_offsets_h, lead_h, sample_every_h, **kw)

    def __len__(self) -> int:
        return len(self._tgt_idx)

    def _frames(self, idx: torch.Tensor) -> torch.Tensor:
        """Normalised frames ``[*idx.shape, C, lat, lon]`` of all channels at time positions ``idx``."""
        if self._data is not None:
            return self._data[idx]
        flat = idx.reshape(-1).numpy()
        arr = torch.from_numpy(_normalised(self._ds, self.channels, self.normalizer, flat))
        return arr.reshape(*idx.shape, *arr.shape[1:])

    def _pairs(self, i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, nv = len(i), len(self.input_vars)
        x = self._frames(self._in_idx[i])[:, :, :nv].reshape(n, -1, *self._const.shape[1:])
        x = torch.cat([x, self._const.expand(n, *self._const.shape)], dim=1)
        tpos = [self.channels.index(c) for c in self.target_vars]
        return x, self._frames(self._tgt_idx[i])[:, tpos]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._pairs(torch.tensor([int(i) % len(self) if i < 0 else int(i)]))
        return x[0], y[0]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All samples at once: x ``[N, C_in, lat, lon]``, y ``[N, C_out, lat, lon]`` (the in-memory fast path)."""
        return self._pairs(torch.arange(len(self)))

    def truth(self) -> xr.Dataset:
        """The targets in physical units, dims (time = valid time, lat, lon)."""
        return to_xarray(self.tensors()[1], self)


def to_xarray(pred: np.ndarray | torch.Tensor, dataset: WeatherDataset,
              times: np.ndarray | None = None) -> xr.Dataset:
    """Denormalise predictions ``[N, C_target, lat, lon]`` into a Dataset (time = valid time, lat, lon), one var each."""
    arr = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
    times = dataset.valid_times if times is None else np.asarray(times)
    want = (len(times), len(dataset.target_vars), dataset.lat.size, dataset.lon.size)
    if arr.shape != want:
        raise ValueError(f"predictions have shape {arr.shape}, expected {want} (valid times, {dataset.target_vars}, "
                         f"lat, lon); pass times= for a subset of the samples")
    norm, coords = dataset.normalizer, {"time": times, "lat": dataset.lat.values, "lon": dataset.lon.values}
    out = xr.Dataset({c: (("time", "lat", "lon"), arr[:, i].astype(np.float64) * norm.std[c] + norm.mean[c],
                          {"units": var_spec(c).units}) for i, c in enumerate(dataset.target_vars)}, coords=coords)
    out.attrs = dict(dataset.attrs)
    return out
