"""WeatherBench ERA5 at 5.625 deg: open and check the data in either layout, normalise, report availability.

Both layouts (docs/data.md) load to the same ``(time, lat, lon)`` channels (``z500``, ``t850``, ``t2m``, ...),
latitude ascending: WeatherBench 2's ``<root>/era5_64x32.zarr`` and its ``manifest.json`` (``weatherbench2``),
6-hourly; WeatherBench 1's ``<root>/5.625deg/<var_dir>/<var_dir>_<year>_5.625deg.nc`` and
``<root>/5.625deg/constants/constants_5.625deg.nc``, hourly, read lazily when dask is installed, else per file and
concatenated in memory (only the time steps asked for). ``weather_dataset`` serves the (input, target) tensors.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import xarray as xr

from racecar_repro.data import MissingDataError
from racecar_repro.data import weatherbench2 as wb2
from racecar_core.files import read_json, write_json
from racecar_repro.paths import data_dir

RESOLUTION = "5.625deg"
CONSTANTS = ("orography", "lsm", "lat2d")
SPLITS = {"train": tuple(range(1979, 2016)), "valid": (2016,), "test": (2017, 2018)}
DEFAULT_VARIABLES = ("z500", "t850", "t2m")
DEFAULT_YEARS = tuple(range(1979, 2019))
TP_EPS = 1e-3  # m: precipitation enters as log(tp + 1 mm) - log(1 mm), as in Rasp & Thuerey's data generator
_DASK = importlib.util.find_spec("dask") is not None  # then WeatherBench 1 files are opened lazily


@dataclass(frozen=True)
class VarSpec:
    """One WeatherBench variable: channel name, archive folder, netCDF short name, pressure level, units."""

    channel: str
    var_dir: str
    short: str
    level: int | None
    units: str


VARIABLES = {s.channel: s for s in (VarSpec("z500", "geopotential_500", "z", 500, "m**2 s**-2"),
                                    VarSpec("t850", "temperature_850", "t", 850, "K"),
                                    VarSpec("t2m", "2m_temperature", "t2m", None, "K"))}


def var_spec(name: str) -> VarSpec:
    """Look up a variable by channel name (``z500``) or WeatherBench-1 folder (``geopotential_500``); channels that
    only the WeatherBench 2 layout is read for here (``u250``, ``q700``, ``tp``, ``tisr``, ...) have no short name."""
    for s in VARIABLES.values():
        if name in (s.channel, s.var_dir):
            return s
    try:
        wb2_name, level = wb2.parse_channel(name)
    except ValueError:
        raise ValueError(f"unknown WeatherBench variable {name!r}; known: {[s.channel for s in VARIABLES.values()]}, "
                         f"{[s.var_dir for s in VARIABLES.values()]}, or a WeatherBench 2 channel such as 'u250', "
                         f"'q700', 'tp', 'tisr'") from None
    return VarSpec(name, wb2_name, "", level, wb2.UNITS[wb2_name])


def default_root(variables: Sequence[str] = DEFAULT_VARIABLES, years: Sequence[int] = DEFAULT_YEARS) -> Path:
    """Where the real data for ``variables`` and ``years`` are: a WeatherBench 2 copy that holds them
    (``weatherbench2.find_root``), else a WeatherBench 1 archive in ``<data_dir>/weatherbench``, else the quick
    subset's WeatherBench 2 folder (where ``make data-weather`` puts it)."""
    found = wb2.find_root([var_spec(v).channel for v in variables], years)
    if found is not None:
        return found
    wb1 = data_dir() / "weatherbench"
    if (wb1 / RESOLUTION).is_dir():
        return wb1
    return wb2.default_root() / "quick"


def is_wb2(root: str | Path) -> bool:
    """Whether ``root`` holds the WeatherBench 2 layout (a local zarr store) rather than WeatherBench 1's files."""
    return wb2.store_path(root).exists()


def var_path(root: str | Path, var: str, year: int) -> Path:
    """Path of one variable-year file."""
    d = var_spec(var).var_dir
    return Path(root) / RESOLUTION / d / f"{d}_{int(year)}_{RESOLUTION}.nc"


def constants_path(root: str | Path) -> Path:
    """Path of the constants file (orography, lsm, lat2d)."""
    return Path(root) / RESOLUTION / "constants" / f"constants_{RESOLUTION}.nc"


def fetch_command(variables: Iterable[str], years: Sequence[int] = DEFAULT_YEARS) -> str:
    """The command that downloads ``variables`` (from WeatherBench 2, the only source still online)."""
    return wb2.fetch_command([var_spec(v).channel for v in variables] or list(DEFAULT_VARIABLES), years)


def _missing_files(paths: list[Path], variables: Sequence[str], years: Sequence[int] = DEFAULT_YEARS):
    listed = ", ".join(str(p) for p in paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
    return MissingDataError(f"WeatherBench file(s) missing: {listed}. WeatherBench 1's server is retired; fetch the "
                            f"same fields from WeatherBench 2 with {fetch_command(variables, years)}.")


def split_years(split: str, available: Sequence[int] | None = None) -> tuple[int, ...]:
    """Years of ``split`` (train 1979-2015, valid 2016, test 2017-2018), restricted to ``available`` if given."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLITS)}")
    years = tuple(y for y in SPLITS[split] if available is None or y in set(available))
    if not years:
        raise ValueError(f"no {split} years ({SPLITS[split][0]}-{SPLITS[split][-1]}) among {tuple(available or ())}")
    return years


def is_synthetic(ds: xr.Dataset) -> bool:
    """True when ``ds`` came from ``weather_synth`` (global attribute ``synthetic``)."""
    return bool(ds.attrs.get("synthetic"))


def _wb1_dims(ds: xr.Dataset) -> xr.Dataset:
    """WeatherBench-1 files as ``lat``/``lon`` with latitude ascending (some copies say latitude/longitude, or run
    north to south)."""
    ds = ds.rename({k: v for k, v in (("latitude", "lat"), ("longitude", "lon")) if k in ds.dims or k in ds.coords})
    if "lat" in ds.coords and ds["lat"].size > 1 and ds["lat"].values[0] > ds["lat"].values[-1]:
        ds = ds.isel(lat=slice(None, None, -1))
    return ds


def _check_grid(ds: xr.Dataset, ref: xr.Dataset | None, path: Path, ref_path: Path | None) -> None:
    for c in ("lat", "lon"):
        if c not in ds.coords:
            raise ValueError(f"{path}: no {c!r} coordinate (has {list(ds.coords)}); not a WeatherBench file?")
        if ref is not None and (ds[c].size != ref[c].size or not np.allclose(ds[c].values, ref[c].values)):
            raise ValueError(f"grid mismatch: {c} of {path} ({ds[c].size} points, {float(ds[c][0]):g}..."
                             f"{float(ds[c][-1]):g}) differs from {ref_path} ({ref[c].size} points, "
                             f"{float(ref[c][0]):g}...{float(ref[c][-1]):g})")


def _open_var(root: Path, spec: VarSpec, years: Sequence[int], step_hours: int | None,
              ref: tuple[xr.Dataset, Path] | None) -> tuple[xr.DataArray, tuple[xr.Dataset, Path], set[str]]:
    """Open one variable's files, check grids, select its level, subsample in time and concatenate."""
    parts, tags = [], set()
    for y in years:
        path = var_path(root, spec.channel, y)
        ds = _wb1_dims(xr.open_dataset(path, chunks={} if _DASK else None))
        if spec.short not in ds:
            raise ValueError(f"{path}: variable {spec.short!r} not found (has {list(ds.data_vars)})")
        _check_grid(ds, ref[0] if ref else None, path, ref[1] if ref else None)
        ref = ref or (ds, path)
        tags.add(str(ds.attrs.get("synthetic", "")))
        da = ds[spec.short]
        if "level" in da.dims:
            da = da.sel(level=spec.level)
        elif "level" in da.coords and int(da["level"]) != spec.level:
            raise ValueError(f"{path}: level is {int(da['level'])}, expected {spec.level}")
        if step_hours:
            hours = (da.time.values - np.datetime64("1970-01-01")) // np.timedelta64(1, "h")
            da = da.isel(time=np.flatnonzero(hours % step_hours == 0))
        parts.append(da.drop_vars("level", errors="ignore").rename(spec.channel))
    return xr.concat(parts, dim="time"), ref, tags


def open_weatherbench(root: str | Path | None = None, variables: Sequence[str] = DEFAULT_VARIABLES,
                      years: Sequence[int] = DEFAULT_YEARS, step_hours: int | None = None) -> xr.Dataset:
    """Open ``variables`` for ``years`` as one Dataset of channels (``z500``, ...) on (time, lat, lon), from either
    layout (``is_wb2``); ``step_hours`` keeps only times at multiples of that many hours (6 of the hourly archive)."""
    root = Path(root) if root is not None else default_root(variables, years)
    if is_wb2(root):
        return open_wb2(root, variables, years, step_hours)
    specs = [var_spec(v) for v in variables]
    only_wb2 = [s.channel for s in specs if not s.short]
    if only_wb2:
        raise ValueError(f"channel(s) {only_wb2} are read from the WeatherBench 2 layout only; {root} holds "
                         f"WeatherBench 1 files. Fetch them with {fetch_command(variables, years)}")
    missing = [var_path(root, s.channel, y) for s in specs for y in years if not var_path(root, s.channel, y).is_file()]
    if missing:
        raise _missing_files(missing, [s.channel for s in specs], years)
    arrays, ref, tags = [], None, set()
    for s in specs:
        da, ref, t = _open_var(root, s, sorted(years), step_hours, ref)
        if not (np.diff(da.time.values) > np.timedelta64(0)).all():
            raise ValueError(f"{s.var_dir}: times are not strictly increasing across years {sorted(years)}")
        arrays.append(da)
        tags |= t
    if len(tags) > 1:
        raise ValueError(f"{root}: real and synthetic files mixed ({sorted(tags)}); regenerate or re-download")
    try:
        ds = xr.merge(arrays, join="exact", combine_attrs="drop")
    except ValueError as err:
        raise ValueError(f"variables {list(variables)} under {root} do not share the same times and grid: {err}") from err
    tag = tags.pop() if tags else ""
    ds.attrs = {**({"synthetic": tag} if tag else {}), "source": str(root / RESOLUTION)}
    if all(v.chunks is None for v in ds.data_vars.values()):  # lazy (dask) data are checked as they are loaded
        check_finite(ds)
    return ds


def open_wb2(root: str | Path, variables: Sequence[str] = DEFAULT_VARIABLES, years: Sequence[int] = DEFAULT_YEARS,
             step_hours: int | None = None) -> xr.Dataset:
    """The WeatherBench 2 layout as ``open_weatherbench`` returns it: channels on (time, lat, lon), latitude
    ascending, only ``years`` (and multiples of ``step_hours``, which must be a multiple of the store's 6 h)."""
    root = Path(root)
    store, channels = wb2.store_path(root), [var_spec(v).channel for v in variables]
    mpath = wb2.manifest_path(root)
    if not mpath.is_file() or not read_json(mpath).get("complete"):
        raise MissingDataError(f"the WeatherBench 2 copy in {root} is incomplete (no finished {mpath.name}): run "
                               f"{fetch_command(channels, years)} again to resume it")
    if step_hours and step_hours % wb2.STEP_HOURS:
        raise ValueError(f"WeatherBench 2 is {wb2.STEP_HOURS}-hourly; time steps of {step_hours} h (the offsets, lead "
                         f"and sampling interval) must be multiples of {wb2.STEP_HOURS} h")
    ds = xr.open_zarr(store, consolidated=True)
    wb2.check_grid(ds, str(store))
    for c in channels:
        name, level = wb2.parse_channel(c)
        if name not in ds.data_vars or (level is not None and level not in ds["level"].values):
            raise MissingDataError(f"{store} has no {name}{f' at {level} hPa' if level else ''} (channel {c}); fetch "
                                   f"it with {fetch_command(channels, years)} into another --root")
    out = xr.merge([wb2.as_channels(ds, channels)], combine_attrs="drop")  # no attrs, as from WeatherBench 1
    out = out.transpose("time", "lat", "lon")
    if "tp" in out:  # as Rasp & Thuerey's data generator: precipitation on a log scale, log(1 + tp / 1 mm)
        out["tp"] = (np.log(out["tp"] + TP_EPS) - np.log(TP_EPS)).assign_attrs(units="log(1 + tp / 1 mm)")
    years = sorted(int(y) for y in years)
    have = set(np.unique(out["time"].dt.year.values).tolist())
    if [y for y in years if y not in have]:
        raise MissingDataError(f"{store} holds the years {min(have)}-{max(have)}, not "
                               f"{[y for y in years if y not in have]}"
                               f": fetch them with {fetch_command(channels, years)} into another --root")
    keep = np.isin(out["time"].dt.year.values, years)
    if step_hours:
        hours = (out["time"].values - np.datetime64("1970-01-01")) // np.timedelta64(1, "h")
        keep &= hours % step_hours == 0
    out = out.isel(time=np.flatnonzero(keep))
    tag = ds.attrs.get("synthetic", "")
    out.attrs = {**({"synthetic": tag} if tag else {}), "source": str(store)}
    return out


def check_finite(ds: xr.Dataset) -> None:
    """Raise ValueError naming the channel and first time when ``ds`` holds NaN or inf."""
    for name, da in ds.data_vars.items():
        bad = ~np.isfinite(da.values).reshape(da.shape[0], -1).all(axis=1) if "time" in da.dims else None
        if bad is not None and bad.any():
            t = da.time.values[np.flatnonzero(bad)[0]]
            raise ValueError(f"{name}: NaN/inf values at {np.datetime_as_string(t, unit='h')} and {int(bad.sum()) - 1} "
                             f"more time step(s) (file of year {str(t)[:4]} in {ds.attrs.get('source', '?')}); "
                             f"re-download or regenerate that file")
        if bad is None and not np.isfinite(da.values).all():
            raise ValueError(f"{name}: NaN/inf values in {ds.attrs.get('source', '?')}")


def open_constants(root: str | Path | None = None, like: xr.Dataset | None = None) -> xr.Dataset:
    """Open the constants (orography, lsm, lat2d) and check their grid against ``like``."""
    root = Path(root) if root is not None else default_root()
    if is_wb2(root):
        ds = _wb2_constants(root)
        path = wb2.store_path(root)
    else:
        path = constants_path(root)
        if not path.is_file():
            raise _missing_files([path], [])
        with xr.open_dataset(path) as c:
            ds = _wb1_dims(c[list(CONSTANTS)].load())
    _check_grid(ds, like, path, Path(like.attrs.get("source", "the data")) if like is not None else None)
    check_finite(ds)
    return ds


def _wb2_constants(root: Path) -> xr.Dataset:
    """Orography (m, from the surface geopotential), land-sea mask and latitude on (lat, lon), latitude ascending."""
    with xr.open_zarr(wb2.store_path(root), consolidated=True) as z:
        missing = [v for v in wb2.STATIC_VARS.values() if v not in z.data_vars]
        if missing:
            raise MissingDataError(f"{wb2.store_path(root)} has no {missing}: it was fetched with --no-static; "
                                   f"fetch again with {wb2.FETCH_HINT} into another --root")
        st = z[list(wb2.STATIC_VARS.values())].load().rename({"latitude": "lat", "longitude": "lon"})
    st = st.transpose("lat", "lon").sortby("lat")
    lat2d = xr.broadcast(st["lat"], st["lon"])[0].astype(np.float32)
    return xr.Dataset({"orography": st["geopotential_at_surface"] / wb2.G, "lsm": st["land_sea_mask"],
                       "lat2d": lat2d}).drop_vars("level", errors="ignore")


def _fingerprint(root: Path, channel: str, years: Sequence[int]) -> str | None:
    """What the cached statistics of ``channel`` were computed from; None when its files are not (all) there."""
    try:
        if is_wb2(root):  # the manifest records every chunk's checksum: it changes when the data do
            text = wb2.manifest_path(root).read_bytes() + json.dumps([channel, list(years)]).encode()
        else:
            text = json.dumps([(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                               for p in (var_path(root, channel, y) for y in years)]).encode()
    except FileNotFoundError:
        return None  # open_weatherbench then raises MissingDataError with the fetch command
    return hashlib.sha256(text).hexdigest()[:16]


@dataclass
class Normalizer:
    """Per channel, the mean and the standard deviation over (time, lat, lon) of the training years, unweighted: what
    Rasp & Thuerey's data generator (and so the authors' draft) normalises with; the paper's error is in these units."""

    mean: dict[str, float]
    std: dict[str, float]
    source: str = field(default="computed", compare=False)

    @classmethod
    def compute(cls, ds: xr.Dataset) -> Normalizer:
        """Compute the statistics of every channel of ``ds`` (float64 accumulation)."""
        mean, std = {}, {}
        for c, da in ds.data_vars.items():
            da = da.astype("float64")
            mean[c], std[c] = (0.0 if c == "tp" else float(da.mean())), float(da.std())  # Rasp: tp's mean 0
            if not (math.isfinite(mean[c]) and math.isfinite(std[c]) and std[c] > 0):
                raise ValueError(f"{c}: normalisation statistics mean={mean[c]}, std={std[c]}: NaNs or constant data")
        return cls(mean, std)

    @classmethod
    def for_training(cls, root: str | Path | None, years: Sequence[int], variables: Sequence[str] = DEFAULT_VARIABLES,
                     step_hours: int | None = None) -> Normalizer:
        """Statistics of the training ``years``, cached in ``<root>/5.625deg/normalization_<hash>.json``."""
        root = Path(root) if root is not None else default_root(variables, years)
        years = sorted(int(y) for y in years)
        key = hashlib.sha256(json.dumps({"years": years, "step_hours": step_hours, "std": "time, lat, lon"}).encode()
                           ).hexdigest()[:12]
        path = (root if is_wb2(root) else root / RESOLUTION) / f"normalization_{key}.json"
        cache = read_json(path) if path.is_file() else {"years": years, "step_hours": step_hours, "channels": {}}
        chans = [var_spec(v).channel for v in variables]
        todo = [c for c in chans if cache["channels"].get(c, {}).get("files") != _fingerprint(root, c, years)]
        if todo:
            stats = cls.compute(open_weatherbench(root, todo, years, step_hours))
            for c in todo:
                cache["channels"][c] = {"mean": stats.mean[c], "std": stats.std[c],
                                        "files": _fingerprint(root, c, years)}
            write_json(path, cache)
        ch = cache["channels"]
        return cls({c: ch[c]["mean"] for c in chans}, {c: ch[c]["std"] for c in chans},
                   source=f"{'computed' if todo else 'cache'}: {path}")


def check_available(root: str | Path | None = None, variables: Sequence[str] = DEFAULT_VARIABLES,
                    years: Sequence[int] = DEFAULT_YEARS) -> tuple[bool, str]:
    """Availability for the registry: True only when the real (not synthetic) files are all on disk."""
    root = Path(root) if root is not None else default_root(variables, years)
    if is_wb2(root) or not (root / RESOLUTION).is_dir():
        return _wb2_available(root, variables, years)
    paths = [var_path(root, v, y) for v in variables for y in years] + [constants_path(root)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        return False, (f"WeatherBench: {len(missing)} of {len(paths)} files missing under {root / RESOLUTION} "
                       f"(e.g. {missing[0].name}); run {fetch_command(variables)}")
    import netCDF4

    for v in variables:
        with netCDF4.Dataset(var_path(root, v, years[0])) as nc:
            if "synthetic" in nc.ncattrs():
                return False, (f"WeatherBench: {root / RESOLUTION} holds synthetic files (NOT ERA5); "
                               f"for the real data run {fetch_command(variables)}")
    return True, f"WeatherBench: real files for {len(variables)} variables, {years[0]}-{years[-1]} in {root / RESOLUTION}"


def _wb2_available(root: Path, variables: Sequence[str], years: Sequence[int]) -> tuple[bool, str]:
    if not wb2.has_store(root):
        what = "is incomplete" if wb2.manifest_path(root).is_file() else "is not there"
        return False, f"WeatherBench 2: the copy in {root} {what}; run {fetch_command(variables, years)}"
    try:
        ds = open_wb2(root, variables, years)
    except MissingDataError as err:
        return False, f"WeatherBench 2: {err}"
    if is_synthetic(ds):
        return False, (f"WeatherBench 2: {wb2.store_path(root)} is synthetic (NOT ERA5); for the real data run "
                       f"{fetch_command(variables, years)}")
    return True, (f"WeatherBench 2: ERA5 for {len(variables)} variables, {min(years)}-{max(years)} in "
                  f"{wb2.store_path(root)}")
