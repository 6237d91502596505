"""WeatherBench 2's ERA5 at 5.625 deg (64 x 32 equiangular, conservative regridding, 6-hourly): a local subset of the
public zarr store, and a synthetic look-alike (NOT ERA5) in the same format.

``make data-weather`` (``python -m racecar_repro.data.weatherbench2``; docs/data.md) copies the variables, levels and
years asked for (``--subset quick|paper``: notebook 04's profiles) from the public store (anonymous ``gs://``) into
``<data_dir>/weatherbench2/<subset>/era5_64x32.zarr`` block by block, resumably, each chunk's size and sha256 kept in
``manifest.json``. ``write_synthetic_store`` writes the look-alike (NOT ERA5) in the real store's format.
"""
from __future__ import annotations

import argparse
import math
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from racecar_repro.data import MissingDataError
from racecar_repro.data.download import first_line
from racecar_repro.data.weather_synth import GENERATOR_VERSION, LAT, LON, _latent, geography, physical_fields
from racecar_core.files import read_json, sha256_file, write_json
from racecar_repro.paths import data_dir

ERA5_STORE = "gs://weatherbench2/datasets/era5/1959-2022-6h-64x32_equiangular_conservative.zarr"
ERA5_YEARS = (1959, 2021)  # 92,044 steps: 1959-01-01T00 to 2021-12-31T18 (the name says 2022)
# WeatherBench 2's data guide also lists a newer copy that runs to 2023-01-10 (`make data-weather ERA5_STORE=...`);
# the default stays the one above: every year the profiles use (1979-2018) is in both, and copies already made keep
# their manifests' source
ERA5_STORE_NEWER = "gs://weatherbench2/datasets/era5/1959-2023_01_10-6h-64x32_equiangular_conservative.zarr"
CLIMATOLOGY_STORE = ("gs://weatherbench2/datasets/era5-hourly-climatology/"
                     "1990-2019_6h_64x32_equiangular_conservative.zarr")
HOST = "storage.googleapis.com"
DIRNAME, STORE_NAME, MANIFEST_NAME = "weatherbench2", "era5_64x32.zarr", "manifest.json"
FETCH_HINT = "make data-weather"
LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)
STEP_HOURS = 6
TIME_CHUNK = 100  # time steps per chunk, as in the real store
G = 9.80665  # m/s^2: geopotential_at_surface / G = orography in m
# racecar_core's channel names -> WeatherBench 2 variables: "z500" is geopotential at 500 hPa
LEVEL_VARS = {"z": "geopotential", "t": "temperature", "u": "u_component_of_wind", "v": "v_component_of_wind",
              "q": "specific_humidity"}
SURFACE_VARS = {"t2m": "2m_temperature", "tp": "total_precipitation_6hr", "tisr": "toa_incident_solar_radiation"}
STATIC_VARS = {"orography": "geopotential_at_surface", "lsm": "land_sea_mask"}
UNITS = {"geopotential": "m**2 s**-2", "temperature": "K", "u_component_of_wind": "m s**-1",
         "v_component_of_wind": "m s**-1", "specific_humidity": "kg kg**-1", "2m_temperature": "K",
         "total_precipitation_6hr": "m", "toa_incident_solar_radiation": "J m**-2",
         "geopotential_at_surface": "m**2 s**-2", "land_sea_mask": "(0 - 1)"}
DEFAULT_CHANNELS = ("z500", "t850", "t2m")
# Rasp & Thuerey's (2021) inputs, which the authors' WeatherBench draft used: z, t, u, v, q at 7 levels, t2m,
# 6-hourly precipitation and top-of-atmosphere sunshine (38 fields; at 3 times plus 3 constants: 117 channels)
RASP_LEVELS = (50, 250, 500, 600, 700, 850, 925)
RASP_INPUTS = tuple(f"{v}{lv}" for v in "ztuvq" for lv in RASP_LEVELS) + ("t2m", "tp", "tisr")
# what `make data-weather PROFILE=...` fetches: the fields and years of notebook 04's profiles
SUBSETS = {"quick": {"channels": DEFAULT_CHANNELS, "years": tuple(range(2010, 2019))},
           "paper": {"channels": RASP_INPUTS, "years": tuple(range(1979, 2019))}}
SYNTHETIC_TAG = "racecar_repro.data.weatherbench2 synthetic store (NOT ERA5)"
SYNTHETIC_VERSION = 2  # bump when synthetic_fields or the climatology it gets changes (2: ERA5 units and ranges)


def default_root() -> Path:
    """``<data_dir>/weatherbench2``: one folder per subset (``quick``, ``paper``), each a store and its manifest."""
    return data_dir() / DIRNAME


def store_path(root: str | Path | None = None) -> Path:
    """The local store under ``root``."""
    return (Path(root) if root is not None else default_root()) / STORE_NAME


def manifest_path(root: str | Path | None = None) -> Path:
    """The manifest beside the store."""
    return (Path(root) if root is not None else default_root()) / MANIFEST_NAME


def parse_channel(channel: str) -> tuple[str, int | None]:
    """``"z500"`` -> ``("geopotential", 500)``, ``"t2m"`` -> ``("2m_temperature", None)``."""
    if channel in SURFACE_VARS:
        return SURFACE_VARS[channel], None
    m = re.fullmatch(r"([ztuvq])(\d+)", channel)
    if m and int(m.group(2)) in LEVELS:
        return LEVEL_VARS[m.group(1)], int(m.group(2))
    raise ValueError(f"racecar: unknown WeatherBench 2 channel {channel!r}; use {sorted(SURFACE_VARS)} or one of "
                     f"{sorted(LEVEL_VARS)} followed by a level in hPa from {LEVELS} (e.g. 'z500', 'q700')")


def channels_of(variables: Sequence[str], levels: Sequence[int] | None = None) -> list[str]:
    """Channel names of ``variables`` (short ``z`` or the store's ``geopotential``; ``t2m``, ``tp``, ``tisr``) at
    ``levels`` (hPa) for those on pressure levels: ``(["z", "t2m"], [500, 850])`` -> ``["z500", "z850", "t2m"]``."""
    short = {**{v: k for k, v in LEVEL_VARS.items()}, **{v: k for k, v in SURFACE_VARS.items()}}
    out = []
    for v in variables:
        s = short.get(v, v)
        if s in SURFACE_VARS:
            out.append(s)
        elif s in LEVEL_VARS:
            if not levels:
                raise ValueError(f"racecar: {v} is on pressure levels: give --levels (hPa, of {LEVELS})")
            out += [f"{s}{lv}" for lv in levels]
        else:
            raise ValueError(f"racecar: unknown variable {v!r}; use {sorted(LEVEL_VARS)} with levels, "
                             f"{sorted(SURFACE_VARS)}, or their names in the store {sorted(short)}")
    for c in out:
        parse_channel(c)  # levels outside the store's are errors
    return out


def variables_for(channels: Sequence[str]) -> dict[str, list[int] | None]:
    """The store variables (and their levels) that hold ``channels``."""
    out: dict[str, list[int] | None] = {}
    for ch in channels:
        name, level = parse_channel(ch)
        out[name] = None if level is None else sorted(set(out.get(name) or []) | {level})
    return out


def covers(request: dict, channels: Sequence[str], years: Sequence[int], static: bool = True) -> bool:
    """Whether a manifest's request holds ``channels`` (variables and levels) for ``years`` (and the static fields)."""
    have = request["variables"]
    for name, levels in variables_for(channels).items():
        if name not in have or (levels is not None and not set(levels) <= set(have[name] or [])):
            return False
    return set(int(y) for y in years) <= set(request["years"]) and (not static or bool(request["static"]))


def find_root(channels: Sequence[str], years: Sequence[int], static: bool = True) -> Path | None:
    """The first complete local copy under ``<data_dir>/weatherbench2`` (itself or a subset folder) that holds
    ``channels`` for ``years``, or None."""
    base = default_root()
    for root in [base] + (sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []):
        mpath = manifest_path(root)
        if mpath.is_file():
            m = read_json(mpath)
            if m.get("complete") and covers(m["request"], channels, years, static):
                return root
    return None


def fetch_command(channels: Sequence[str], years: Sequence[int]) -> str:
    """The command that fetches ``channels`` for ``years``: a profile's subset when one covers them."""
    for name, sub in SUBSETS.items():
        req = {"variables": variables_for(sub["channels"]), "years": list(sub["years"]), "static": [1]}
        if covers(req, channels, years):
            return f"`{FETCH_HINT} PROFILE={name}` (or: `python -m racecar_repro.data.weatherbench2 --subset {name}`)"
    ys = sorted(int(y) for y in years)
    span = f"{ys[0]}-{ys[-1]}" if ys == list(range(ys[0], ys[-1] + 1)) else " ".join(map(str, ys))
    return (f"`{FETCH_HINT}` (or: `python -m racecar_repro.data.weatherbench2 --channels {' '.join(channels)} "
            f"--years {span}`)")


def open_source(source: str | Path) -> xr.Dataset:
    """Open a WeatherBench 2 store lazily: ``gs://...`` anonymously (failing at once, naming what is needed, when the
    host cannot be reached), or a local path (tests, copies)."""
    src = str(source)
    if src.startswith("gs://"):
        try:
            socket.create_connection((HOST, 443), timeout=5.0).close()
        except OSError as err:
            raise MissingDataError(
                f"cannot reach {HOST} ({first_line(err)}): `{FETCH_HINT}` reads WeatherBench 2's public ERA5 store "
                f"{ERA5_STORE} over the internet. Run it on a machine with network access and copy "
                f"{default_root()} here, or use source='synthetic' (a labelled look-alike, NOT ERA5)") from err
        return xr.open_zarr(src, storage_options={"token": "anon"}, consolidated=True)
    path = Path(src.removeprefix("file://"))
    if not path.exists():
        raise MissingDataError(f"no WeatherBench 2 store at {path}")
    return xr.open_zarr(path, consolidated=True)


def check_grid(ds: xr.Dataset, where: str) -> None:
    """The 64 x 32 equiangular grid (latitude -87.1875..87.1875, longitude 0..354.375, 5.625 deg), within 1e-3."""
    lat = np.sort(ds["latitude"].values) if "latitude" in ds.coords else None
    lon = np.sort(ds["longitude"].values) if "longitude" in ds.coords else None
    if lat is None or lon is None or lat.shape != LAT.shape or lon.shape != LON.shape or \
            not (np.allclose(lat, LAT, atol=1e-3) and np.allclose(lon, LON, atol=1e-3)):
        got = {c: (ds[c].size, float(ds[c].min()), float(ds[c].max())) for c in ("latitude", "longitude")
               if c in ds.coords}
        raise ValueError(f"{where} is not on the 64 x 32 equiangular 5.625 deg grid (latitude, longitude: "
                         f"{got or list(ds.coords)}); use {ERA5_STORE} (the 64x33 store with poles holds only NaN)")


def select(ds: xr.Dataset, variables: dict[str, list[int] | None], years: Sequence[int], static: Sequence[str],
           where: str) -> xr.Dataset:
    """The requested variables, static fields and years of a store, lazily. The variables with a level share one
    level axis: each comes at every level that any of them was asked for (z500 and t850 fetch z and t at 500 and 850
    hPa)."""
    missing = [v for v in [*variables, *static] if v not in ds.data_vars]
    if missing:
        raise ValueError(f"{where} has no variable(s) {missing}; it has {sorted(ds.data_vars)}")
    years = sorted(int(y) for y in years)
    have = set(np.unique(ds["time"].dt.year.values).tolist())
    absent = [y for y in years if y not in have]
    if absent:
        raise ValueError(f"{where} has no data for year(s) {absent} (it holds {min(have)}-{max(have)})")
    sub = pick(ds, variables, static, where)
    return sub.isel(time=np.flatnonzero(np.isin(sub["time"].dt.year.values, years)))


def levels_of(variables: dict[str, list[int] | None]) -> list[int]:
    """Every pressure level that any of ``variables`` was asked for, sorted."""
    return sorted({lv for lvs in variables.values() if lvs for lv in lvs})


def pick(ds: xr.Dataset, variables: dict[str, list[int] | None], static: Sequence[str] = (),
         where: str = "the store") -> xr.Dataset:
    """``variables`` (and ``static`` fields) of a store at the levels asked for (``levels_of``), or without the level
    dimension when none was; a level the store lacks is an error."""
    sub = ds[list(variables) + list(static)]
    levels = levels_of(variables)
    if levels:
        bad = [lv for lv in levels if lv not in ds["level"].values]
        if bad:
            raise ValueError(f"{where} has no pressure level(s) {bad} hPa (it has {ds['level'].values.tolist()})")
        return sub.sel(level=levels)
    return sub.drop_dims("level", errors="ignore").drop_vars("level", errors="ignore")


def as_channels(ds: xr.Dataset, channels: Sequence[str]) -> xr.Dataset:
    """``channels`` of a store (``z500`` is geopotential at 500 hPa) as variables of those names, dims ``latitude`` /
    ``longitude`` renamed ``lat`` / ``lon``, latitude ascending; lazy as ``ds`` is."""
    out = {}
    for c in channels:
        name, level = parse_channel(c)
        out[c] = ds[name].sel(level=level, drop=True) if level is not None else ds[name]
    return xr.Dataset(out).rename({"latitude": "lat", "longitude": "lon"}).sortby("lat")


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _chunk_file(store: Path, var: str, index: tuple[int, ...]) -> Path:
    """The file of one chunk of a zarr v2 array (its dimension separator read from ``.zarray``)."""
    sep = read_json(store / var / ".zarray").get("dimension_separator") or "."
    return store / var / sep.join(str(i) for i in index)


def _record(store: Path, files: list[Path]) -> dict[str, list]:
    return {str(f.relative_to(store)): [f.stat().st_size, sha256_file(f)] for f in files}


def _bad(store: Path, recorded: dict[str, list]) -> list[str]:
    """The recorded files that are missing or whose size or sha256 differ."""
    return [rel for rel, (size, digest) in recorded.items() if not (store / rel).is_file()
            or (store / rel).stat().st_size != size or sha256_file(store / rel) != digest]


def _plain(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with every variable's encoding (the source's chunks, compressor, ...) dropped, for writing afresh."""
    for v in ds.variables:
        ds[v].encoding = {}
    return ds


def _time_vars(sub: xr.Dataset) -> list[str]:
    return [v for v in sub.data_vars if "time" in sub[v].dims]


def _write_template(sub: xr.Dataset, store: Path) -> dict[str, list]:
    """Create the store: metadata, coordinates and the static fields; the time-dependent data come block by block."""
    tmpl = sub.copy()
    static = [v for v in tmpl.data_vars if "time" not in tmpl[v].dims]
    for v in static:
        tmpl[v] = tmpl[v].load()
    tmpl = _plain(tmpl)
    for v in _time_vars(tmpl):  # lazy, never computed here: only its chunking must match the store's
        tmpl[v] = tmpl[v].chunk({"time": TIME_CHUNK})
    enc = {v: {"chunks": (min(TIME_CHUNK, tmpl.sizes["time"]),) + tmpl[v].shape[1:]} for v in _time_vars(tmpl)}
    tmpl.to_zarr(store, mode="w", compute=False, encoding=enc, consolidated=True, zarr_format=2)
    return _record(store, [_chunk_file(store, v, (0,) * tmpl[v].ndim) for v in static])


class _ChunkReader:
    """The time-dependent variables of ``sub`` (a selection of ``src``) read in whole chunks of the source, each
    chunk once: the copy's blocks of ``TIME_CHUNK`` steps do not start on the source's chunk boundaries (2010 starts
    12 steps into one), so a block spans two source chunks, which read block by block would be read twice. ``read``
    counts the source's bytes (uncompressed, every level of a chunk, which is what a chunk holds)."""

    def __init__(self, src: xr.Dataset, sub: xr.Dataset):
        self.names = _time_vars(sub)
        self.src = src[self.names].sel(level=sub["level"].values) if "level" in sub.dims else src[self.names]
        self.index = np.searchsorted(src["time"].values, sub["time"].values)
        first = src[self.names[0]]
        self.chunk = int((first.encoding.get("chunks") or first.chunksizes.get("time") or (TIME_CHUNK,))[0])
        self.chunk_bytes = sum(int(np.prod((self.chunk, *src[v].shape[1:]))) * src[v].dtype.itemsize
                               for v in self.names)
        self.cache: dict[int, xr.Dataset] = {}
        self.read = 0

    def chunks_of(self, sl: slice) -> np.ndarray:
        return np.unique(self.index[sl] // self.chunk)

    def __call__(self, sl: slice) -> xr.Dataset:
        ks = self.chunks_of(sl)
        self.cache = {k: v for k, v in self.cache.items() if k >= ks[0]}
        for k in ks:
            if k not in self.cache:
                self.cache[k] = self.src.isel(time=slice(k * self.chunk, (k + 1) * self.chunk)).load()
                self.read += self.chunk_bytes
        loaded = xr.concat([self.cache[k] for k in ks], "time")
        return loaded.isel(time=self.index[sl] - ks[0] * self.chunk)


def _write_block(sub: xr.Dataset, store: Path, block: int, read: Callable | None = None) -> dict[str, list]:
    """Fetch time block ``block`` (``TIME_CHUNK`` steps) of every time-dependent variable (through ``read``, a
    ``_ChunkReader``, when given) and write it in place."""
    n = sub.sizes["time"]
    sl = slice(block * TIME_CHUNK, min((block + 1) * TIME_CHUNK, n))
    names = _time_vars(sub)
    part = read(sl) if read is not None else sub[names].isel(time=sl).load()
    part = _plain(part.drop_vars(list(part.coords)))
    empty = [v for v in names if bool(np.isnan(part[v].values).all())]
    if empty:
        raise ValueError(f"the source holds only NaN for {empty} at {str(sub['time'].values[sl.start])[:13]}.."
                         f"{str(sub['time'].values[sl.stop - 1])[:13]}: not a usable ERA5 store (the 64x33 store "
                         f"is all NaN, google-research/weatherbench2#290); use {ERA5_STORE}")
    part.to_zarr(store, region={"time": sl}, zarr_format=2)
    return _record(store, [_chunk_file(store, v, (block,) + (0,) * (sub[v].ndim - 1)) for v in names])


def download(source: str | Path = ERA5_STORE, root: str | Path | None = None,
             channels: Sequence[str] = DEFAULT_CHANNELS, years: Sequence[int] = tuple(range(1979, 2019)),
             static: bool = True, progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Copy ``channels`` (and the static fields) for ``years`` from a WeatherBench 2 store into ``root``; resume an
    interrupted copy and fetch again any chunk whose checksum does not match the manifest. Returns the store path."""
    from tqdm import tqdm

    root = Path(root) if root is not None else default_root()
    store, mpath = store_path(root), manifest_path(root)
    variables = variables_for(channels)
    statics = list(STATIC_VARS.values()) if static else []
    src = open_source(source)
    check_grid(src, str(source))
    sub = select(src, variables, years, statics, str(source))
    request = {"source": str(source), "channels": list(channels), "variables": variables, "static": statics,
               "years": sorted(int(y) for y in years), "time_chunk": TIME_CHUNK, "n_time": int(sub.sizes["time"])}
    manifest = read_json(mpath) if mpath.is_file() else None
    if manifest is not None and manifest["request"] != request:
        raise ValueError(f"{root} holds another WeatherBench 2 subset ({manifest['request']['channels']}, years "
                         f"{manifest['request']['years'][0]}-{manifest['request']['years'][-1]}); delete it or "
                         f"choose another --root")
    names = _time_vars(sub)
    n_blocks = math.ceil(sub.sizes["time"] / TIME_CHUNK)
    block_bytes = [sum(sub[v].isel(time=slice(b * TIME_CHUNK, (b + 1) * TIME_CHUNK)).nbytes for v in names)
                   for b in range(n_blocks)]
    reader = _ChunkReader(src, sub)
    chunks = {int(k) for b in range(n_blocks) for k in reader.chunks_of(slice(b * TIME_CHUNK, (b + 1) * TIME_CHUNK))}
    log(f"WeatherBench 2 ERA5 64x32: {', '.join(channels)}{' + static fields' if statics else ''}, "
        f"{request['years'][0]}-{request['years'][-1]}: {sub.sizes['time']} time steps, {_size(sum(block_bytes))} "
        f"to write (float32, before compression) from {source} into {store}; reads {len(chunks)} source chunks of "
        f"{reader.chunk} steps, {_size(len(chunks) * reader.chunk_bytes)} (each holds every pressure level)")
    if manifest is None or not store.exists():
        manifest = {"request": request, "static": _write_template(sub, store), "blocks": {}, "complete": False}
        write_json(mpath, manifest)
    elif _bad(store, manifest["static"]):
        log("static fields damaged: writing them again")
        manifest["static"] = _write_template(sub, store)
        manifest["blocks"], manifest["complete"] = {}, False
        write_json(mpath, manifest)
    for b, files in list(manifest["blocks"].items()):
        bad = _bad(store, files)
        if bad:
            log(f"block {b}: {len(bad)} chunk file(s) missing or corrupted ({bad[0]}, ...): fetching it again")
            for f in bad:   # zarr 2 decodes an edge chunk to write part of it: a corrupted one would stop the repair
                (store / f).unlink(missing_ok=True)
            del manifest["blocks"][b]
            manifest["complete"] = False
            write_json(mpath, manifest)  # a damaged copy is not complete, also if this run stops before the repair
    todo = [b for b in range(n_blocks) if str(b) not in manifest["blocks"]]
    done = sum(block_bytes[b] for b in range(n_blocks) if b not in todo)
    with tqdm(total=sum(block_bytes), initial=done, unit="B", unit_scale=True, disable=not progress,
              desc="WeatherBench 2", file=sys.stderr) as bar:
        for b in todo:
            manifest["blocks"][str(b)] = _write_block(sub, store, b, read=reader)
            manifest["complete"] = len(manifest["blocks"]) == n_blocks
            write_json(mpath, manifest)
            bar.update(block_bytes[b])
    manifest["complete"] = True
    write_json(mpath, manifest)
    written = sum(block_bytes[b] for b in todo)
    log(f"done: {len(todo)} of {n_blocks} blocks fetched now, {n_blocks - len(todo)} already there "
        f"({_size(reader.read)} read, {_size(written)} written before compression); manifest {mpath}")
    return store


def verify(root: str | Path | None = None) -> list[str]:
    """The chunk files of the local store that are missing or do not match the manifest (empty: all good)."""
    store, mpath = store_path(root), manifest_path(root)
    if not mpath.is_file():
        return [str(mpath)]
    m = read_json(mpath)
    return _bad(store, m["static"]) + [f for files in m["blocks"].values() for f in _bad(store, files)]


def has_store(root: str | Path | None = None) -> bool:
    """Whether a complete local store (per its manifest) is under ``root``."""
    mpath = manifest_path(root)
    return mpath.is_file() and bool(read_json(mpath).get("complete")) and store_path(root).is_dir()


# ------------------------------------------------------------------------------------------- climatology

CLIMATOLOGY_NAME, CLIMATOLOGY_MANIFEST = "climatology_64x32.zarr", "climatology_manifest.json"
TARGETS = ("z500", "t850", "t2m")  # what notebook 04 scores, so what the climatology is fetched for


def download_climatology(source: str | Path = CLIMATOLOGY_STORE, root: str | Path | None = None,
                         channels: Sequence[str] = TARGETS, log: Callable[[str], None] = print) -> Path:
    """Copy the day-of-year/hour climatology of ``channels`` (WeatherBench 2's 1990-2019 ERA5 one by default, dims
    ``hour, dayofyear, [level,] longitude, latitude``; the size of the selection is printed) next to the store in
    ``root``, with a manifest of its chunk files' sizes and sha256. A copy that matches its manifest and request is
    kept."""
    root = Path(root) if root is not None else default_root()
    path, mpath = root / CLIMATOLOGY_NAME, root / CLIMATOLOGY_MANIFEST
    variables = variables_for(channels)
    request = {"source": str(source), "channels": list(channels), "variables": variables}
    if mpath.is_file():
        m = read_json(mpath)
        if m["request"] == request and not _bad(path, m["files"]):
            log(f"climatology already in {path}")
            return path
    src = open_source(source)
    check_grid(src, str(source))
    missing = [d for d in ("dayofyear", "hour") if d not in src.dims] + [v for v in variables if v not in src]
    if missing:
        raise ValueError(f"{source} is not a day-of-year/hour climatology of {list(variables)} (no {missing})")
    sub = pick(src, variables, where=str(source))
    log(f"WeatherBench 2 climatology of {', '.join(channels)}: {_size(sub.nbytes)} from {source} into {path}")
    sub = _plain(sub.load())
    tmp = path.with_name(path.name + ".partial")
    sub.to_zarr(tmp, mode="w", consolidated=True, zarr_format=2)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    files = [f for f in path.rglob("*") if f.is_file() and not f.name.startswith(".")]
    write_json(mpath, {"request": request, "files": _record(path, files)})
    return path


def open_climatology(root: str | Path, channels: Sequence[str]) -> xr.Dataset | None:
    """The copied climatology of ``channels`` as ``(dayofyear, hour, lat, lon)`` variables named by channel, latitude
    ascending, or None when ``root`` has none that holds them (or it does not match its manifest)."""
    root = Path(root)
    path, mpath = root / CLIMATOLOGY_NAME, root / CLIMATOLOGY_MANIFEST
    if not mpath.is_file():
        return None
    m = read_json(mpath)
    if _bad(path, m["files"]) or not covers({**m["request"], "years": [], "static": []}, channels, [], static=False):
        return None
    with xr.open_zarr(path, consolidated=True) as ds:
        return as_channels(ds, channels).transpose("dayofyear", "hour", "lat", "lon").load()


def write_synthetic_climatology(path: str | Path, store: str | Path, channels: Sequence[str] = TARGETS,
                                window_days: int = 61) -> Path:
    """A look-alike of WeatherBench 2's climatology store (NOT ERA5) computed from a synthetic store's fields, in
    the real one's dims ``(hour, dayofyear, [level,] longitude, latitude)``, for the variables (and levels) that
    hold ``channels``: for the tests of the copy path."""
    from racecar_repro.score import doy_hour_climatology
    ds = xr.open_zarr(store, consolidated=True)
    clim = doy_hour_climatology(pick(ds, variables_for(channels)).load(), window_days)
    clim = _plain(clim.transpose("hour", "dayofyear", ...).astype(np.float32))
    clim.attrs = {"synthetic": SYNTHETIC_TAG}
    clim.to_zarr(path, mode="w", consolidated=True, zarr_format=2)
    return Path(path)


# ------------------------------------------------------------------------------------------- synthetic store


def _cos_zenith(times: pd.DatetimeIndex) -> np.ndarray:
    """Cosine of the solar zenith angle [time, lat, lon] (declination by day of year, hour angle by UTC + lon)."""
    doy = np.asarray(times.day_of_year, float)[:, None, None]
    hour = np.asarray(times.hour, float)[:, None, None]
    decl = np.deg2rad(-23.44) * np.cos(2 * np.pi * (doy + 10) / 365.25)
    phi = np.deg2rad(LAT)[None, :, None]
    ha = np.deg2rad((hour + LON[None, None, :] / 15.0 - 12.0) * 15.0)
    return np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(ha)


def synthetic_fields(latent: np.ndarray, times: pd.DatetimeIndex, geo: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every variable of the store from the look-alike's latent fields, [time, (level,) lat, lon], float32.

    Z500, T850 and T2M are ``weather_synth.physical_fields`` (what the WeatherBench-1 look-alike writes); the other
    levels and variables are crude but plausible functions of them (a log-pressure height profile, a power-law
    temperature profile, geostrophic-like winds from the Z500 gradient, humidity from temperature, accumulated
    top-of-atmosphere sunshine over the hour (ERA5's toa_incident_solar_radiation), rain from the third latent
    field), each in its ERA5 variable's units and range. Synthetic: a pipeline check, not weather."""
    base = physical_fields(latent, times, geo)
    z500, t850, t2m = base["geopotential_500"], base["temperature_850"], base["2m_temperature"]
    p = np.asarray(LEVELS, float)[None, :, None, None]
    # heights from a log-pressure profile whose scale height shrinks upwards (z50 about 2e5 m2 s-2, as ERA5's)
    z = np.maximum(z500[:, None] * (np.log(1000.0 / p) / np.log(2.0)) ** 0.85, z500[:, None] * 0.0 + 500.0)
    z = np.where(p == 500, z500[:, None], z)
    t = np.where(p == 850, t850[:, None], t850[:, None] * (np.maximum(p, 200.0) / 850.0) ** 0.12)  # isothermal
    # above 200 hPa, as the lower stratosphere roughly is (ERA5 never goes below about 180 K)
    dy = np.deg2rad(5.625) * 6.371e6
    dz_dy = np.gradient(z500, axis=1) / dy
    dz_dx = (np.roll(z500, -1, axis=2) - np.roll(z500, 1, axis=2)) / (2 * dy)   # no 1/cos(lat): no polar blow-up
    scale = (p / 500.0) ** -0.3
    u, v = -dz_dy[:, None] / 1e-4 * scale, dz_dx[:, None] / 1e-4 * scale
    q = np.clip(3.8e-3 * np.exp(0.07 * (t - 273.15)) * (p / 1000.0), 1e-6, 0.03)
    tisr = 1361.0 * np.clip(_cos_zenith(times), 0.0, None) * 3600.0   # J m-2 in the hour, as ERA5 accumulates it
    tp = np.clip(latent[:, 2] - 0.8, 0.0, None) * 2e-3
    out = {"geopotential": z, "temperature": t, "u_component_of_wind": u, "v_component_of_wind": v,
           "specific_humidity": q, "2m_temperature": t2m, "total_precipitation_6hr": tp,
           "toa_incident_solar_radiation": tisr}
    return {k: a.astype(np.float32) for k, a in out.items()}


def write_synthetic_store(path: str | Path, years: Sequence[int] = (2015, 2016, 2017), seed: int = 0,
                          days_per_year: int | None = None, channels: Sequence[str] | None = None,
                          overwrite: bool = False) -> Path:
    """Write a look-alike of the WeatherBench 2 store (NOT ERA5) at ``path``: the real names, dimensions
    ``(time, [level,] longitude, latitude)``, coordinates, 100-step time chunks and consolidated zarr v2 metadata;
    6-hourly from ``weather_synth``'s model (its Z500, T850 and T2M equal the WeatherBench-1 look-alike's at the same
    times). ``days_per_year`` keeps the first days of each year; ``channels`` keeps only the variables (and the
    levels) that hold them, in the same format. A store written before with the same settings is kept unless
    ``overwrite``."""
    path = Path(path)
    attrs = {"synthetic": SYNTHETIC_TAG, "synthetic_seed": seed,
             "synthetic_version": f"{GENERATOR_VERSION}.{SYNTHETIC_VERSION}",
             "synthetic_days_per_year": -1 if days_per_year is None else days_per_year,
             "synthetic_years": [int(y) for y in sorted(years)],
             "synthetic_channels": "all" if channels is None else " ".join(channels)}
    wanted = variables_for(channels) if channels is not None else None
    levels = levels_of(wanted) if wanted else list(LEVELS)
    at = [LEVELS.index(lv) for lv in levels]
    if not overwrite and (path / ".zmetadata").is_file():
        with xr.open_zarr(path, consolidated=True) as old:
            if all(old.attrs.get(k) == v for k, v in attrs.items()):
                return path
    geo = geography()
    parts = []
    for year, latent in sorted(_latent(sorted(years), STEP_HOURS, seed).items()):
        times = pd.date_range(f"{year}-01-01", periods=latent.shape[0], freq=f"{STEP_HOURS}h")
        if days_per_year is not None:
            keep = times < pd.Timestamp(year, 1, 1) + pd.Timedelta(days=days_per_year)
            times, latent = times[keep], latent[keep]
        fields = synthetic_fields(latent, times, geo)
        data = {}
        for name, a in fields.items():
            if wanted is not None and name not in wanted:
                continue
            dims = ("time", "level", "longitude", "latitude") if a.ndim == 4 else ("time", "longitude", "latitude")
            a = a[:, at] if a.ndim == 4 else a
            data[name] = (dims, np.swapaxes(a, -1, -2), {"units": UNITS[name]})
        parts.append(xr.Dataset(data, coords={"time": times}))
    ds = xr.concat(parts, dim="time")
    ds = ds.assign_coords(longitude=LON, latitude=LAT)
    if "level" in ds.dims:
        ds = ds.assign_coords(level=np.asarray(levels, np.int64))
    ds["geopotential_at_surface"] = (("longitude", "latitude"), (geo["orography"].T * G).astype(np.float32),
                                     {"units": UNITS["geopotential_at_surface"]})
    ds["land_sea_mask"] = (("longitude", "latitude"), geo["lsm"].T.astype(np.float32),
                           {"units": UNITS["land_sea_mask"]})
    ds.attrs = attrs
    enc = {v: {"chunks": (min(TIME_CHUNK, ds.sizes["time"]),) + ds[v].shape[1:]} if "time" in ds[v].dims
           else {"chunks": ds[v].shape} for v in ds.data_vars}
    ds.to_zarr(path, mode="w", encoding=enc, consolidated=True, zarr_format=2)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m racecar_repro.data.weatherbench2 [--channels z500 t850 t2m] [--years 1979-2018]``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subset", choices=sorted(SUBSETS), default="quick",
                    help="the fields and years of notebook 04's quick profile (Z500, T850, T2M, 2010-2018, ~0.5 GB) "
                         "or paper profile (Rasp & Thuerey's 38 input fields, 1979-2018, ~18 GB)")
    ap.add_argument("--channels", nargs="+", default=None,
                    help="instead of a subset: e.g. z500 t850 t2m (z/t/u/v/q + a level in hPa, or t2m, tp, tisr)")
    ap.add_argument("--vars", nargs="+", default=None,
                    help="instead of --channels: variables (z t u v q, or t2m tp tisr, or the store's names such as "
                         "geopotential), with --levels for those on pressure levels")
    ap.add_argument("--levels", nargs="+", type=int, default=None, help=f"hPa, of {LEVELS}")
    ap.add_argument("--years", default=None, help="instead of the subset's: a range 1979-2018 or years 2015 2016",
                    nargs="+")
    ap.add_argument("--root", type=Path, default=None,
                    help=f"default: {default_root()}/<subset> (or /custom with --channels or --years)")
    ap.add_argument("--source", default=ERA5_STORE,
                    help=f"the store to copy from (a gs:// URL or a local path); the newer one: {ERA5_STORE_NEWER}")
    ap.add_argument("--no-static", action="store_true", help="leave out orography and the land-sea mask")
    ap.add_argument("--climatology-source", default=CLIMATOLOGY_STORE,
                    help="the day-of-year/hour climatology to copy for WeatherBench 2's ACC")
    ap.add_argument("--no-climatology", action="store_true", help="do not copy the climatology")
    ap.add_argument("--verify", action="store_true", help="only check the local store against its manifest")
    a = ap.parse_args(argv)
    if a.verify:
        bad = verify(a.root or default_root() / a.subset)
        print("all chunk files match the manifest" if not bad else f"{len(bad)} bad file(s): {bad[:5]}")
        return 1 if bad else 0
    sub = SUBSETS[a.subset]
    years: list[int] = list(sub["years"]) if a.years is None else []
    for y in a.years or []:
        lo, _, hi = y.partition("-")
        years += list(range(int(lo), int(hi or lo) + 1))
    try:
        channels = a.channels or (channels_of(a.vars, a.levels) if a.vars else list(sub["channels"]))
        custom = a.channels is not None or a.vars is not None or a.years is not None
        root = a.root or default_root() / ("custom" if custom else a.subset)
        download(a.source, root, channels, years, static=not a.no_static)
        if not a.no_climatology:
            try:
                download_climatology(a.climatology_source, root, [c for c in TARGETS if c in channels] or channels)
            except (FileNotFoundError, MissingDataError) as err:   # e.g. weatherbench2 issue 214: the path moved
                print(f"warning: no climatology at {a.climatology_source} ({first_line(err)}). The ERA5 copy in {root} "
                      "is complete; notebook 04 scores WeatherBench 2's ACC against the training years' day-of-year/"
                      "hour climatology instead (its results.json and figure say so). To copy another one: make "
                      "data-weather CLIMATOLOGY=<path or gs:// URL>", file=sys.stderr)
    except (MissingDataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
