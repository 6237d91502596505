#!/usr/bin/env python
"""Download WeatherBench 5.625 deg (mediaTUM data set 1524895) into ``<root>/5.625deg/<var>/<var>_<year>_5.625deg.nc``.

The server holds one zip per variable (all years 1979-2018) and ``constants_5.625deg.nc``. Downloads resume from a
``.part`` file (HTTP Range), are checked against the server's size, and only the requested years are unzipped.
Example: ``python scripts/download_weatherbench.py --root data/weatherbench --vars geopotential_500 constants``.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Sequence

BASE_URL = "https://dataserv.ub.tum.de/s/m1524895/download"
RESOLUTION = "5.625deg"
DEFAULT_VARS = ("geopotential_500", "temperature_850", "2m_temperature", "constants")
DEFAULT_YEARS = tuple(range(1979, 2019))
# Rough download sizes in GB (used when the server does not answer a HEAD request): one zip per variable.
APPROX_SIZE_GB = {"geopotential_500": 1.4, "temperature_850": 1.4, "2m_temperature": 1.4, "constants": 0.0001}
CHUNK = 1 << 20
Opener = Callable[..., object]


def archive_name(var: str, resolution: str = RESOLUTION) -> str:
    """File the server holds for ``var``: ``<var>_<res>.zip``, or ``constants_<res>.nc``."""
    return f"constants_{resolution}.nc" if var == "constants" else f"{var}_{resolution}.zip"


def build_url(var: str, resolution: str = RESOLUTION, base: str = BASE_URL) -> str:
    """Download URL of ``var``, e.g. ``...download?path=%2F5.625deg%2Fgeopotential_500&files=geopotential_500_5.625deg.zip``."""
    query = urllib.parse.urlencode({"path": f"/{resolution}/{var}", "files": archive_name(var, resolution)},
                                   quote_via=urllib.parse.quote, safe="")
    return f"{base}?{query}"


def remote_size(url: str, opener: Opener = urllib.request.urlopen, timeout: float = 30.0) -> int | None:
    """Size in bytes from a HEAD request, or None when the server does not say."""
    try:
        with opener(urllib.request.Request(url, method="HEAD"), timeout=timeout) as resp:
            n = resp.headers.get("Content-Length")
            return int(n) if n is not None else None
    except (OSError, ValueError):
        return None


def _total_from_headers(headers, offset: int) -> int | None:
    rng = headers.get("Content-Range")  # "bytes 100-199/200"
    if rng and "/" in rng and not rng.endswith("/*"):
        return int(rng.rsplit("/", 1)[1])
    n = headers.get("Content-Length")
    return int(n) + offset if n is not None else None


def download(url: str, dest: str | Path, expected_size: int | None = None, opener: Opener = urllib.request.urlopen,
             timeout: float = 60.0, log: Callable[[str], None] = print) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` with an HTTP Range request; check the size; return dest."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if dest.is_file() and (expected_size is None or dest.stat().st_size == expected_size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    if expected_size is not None and offset > expected_size:
        log(f"{part} is larger than the expected {expected_size} bytes; starting over")
        part.unlink()
        offset = 0
    total = expected_size
    if expected_size is None or offset < expected_size:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            resp = opener(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code != 416 or not offset:  # 416: nothing left to fetch past offset
                raise
            resp = None
        if resp is not None:
            with resp:
                status = getattr(resp, "status", None) or resp.getcode()
                if offset and status != 206:
                    log(f"server ignored the Range request (status {status}); downloading {dest.name} from the start")
                    offset = 0
                elif offset:
                    log(f"resuming {dest.name} at {offset / 1e6:.1f} MB")
                total = _total_from_headers(resp.headers, offset) or expected_size
                with open(part, "ab" if offset else "wb") as f:
                    shutil.copyfileobj(resp, f, CHUNK)
    size = part.stat().st_size
    for want, what in ((total, "the server's size"), (expected_size, "the expected size")):
        if want is not None and size != want:
            raise OSError(f"{dest.name}: got {size} bytes, {what} is {want}; run the command again to resume "
                          f"from {part}")
    os.replace(part, dest)
    return dest


def extract_into_layout(archive: str | Path, root: str | Path, var: str, years: Sequence[int] | None = None,
                        resolution: str = RESOLUTION) -> list[Path]:
    """Put the files of ``archive`` for ``years`` into ``<root>/<res>/<var>/``; return the paths written."""
    archive, out_dir = Path(archive), Path(root) / resolution / var
    out_dir.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".nc":
        target = out_dir / archive.name
        shutil.copyfile(archive, target.with_name(target.name + ".tmp"))
        os.replace(target.with_name(target.name + ".tmp"), target)
        return [target]
    pattern = re.compile(rf"^{re.escape(var)}_(\d{{4}})_{re.escape(resolution)}\.nc$")
    written, found = [], set()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            m = pattern.match(Path(info.filename).name)
            if not m or (years is not None and int(m.group(1)) not in set(years)):
                continue
            target = out_dir / Path(info.filename).name
            tmp = target.with_name(target.name + ".tmp")
            with zf.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            if tmp.stat().st_size != info.file_size:
                raise OSError(f"{info.filename}: unzipped {tmp.stat().st_size} bytes, zip says {info.file_size}")
            os.replace(tmp, target)
            written.append(target)
            found.add(int(m.group(1)))
    missing = sorted(set(years) - found) if years is not None else []
    if missing:
        raise FileNotFoundError(f"{archive} holds no {var} file for year(s) {missing}")
    return written


def have_files(root: str | Path, var: str, years: Sequence[int], resolution: str = RESOLUTION) -> bool:
    """True when every requested file of ``var`` is already in the layout."""
    d = Path(root) / resolution / var
    if var == "constants":
        return (d / archive_name(var, resolution)).is_file()
    return all((d / f"{var}_{y}_{resolution}.nc").is_file() for y in years)


def _default_root() -> Path:
    try:
        from racecar_core.paths import data_dir
    except ImportError:
        return Path("data") / "weatherbench"
    return data_dir() / "weatherbench"


def main(argv: Sequence[str] | None = None, opener: Opener = urllib.request.urlopen) -> int:
    """Command line: print the download sizes, then fetch, check and unzip what is missing."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=_default_root(), help="data root (default <data_dir>/weatherbench)")
    p.add_argument("--vars", nargs="+", default=list(DEFAULT_VARS), help=f"default: {' '.join(DEFAULT_VARS)}")
    p.add_argument("--years", type=int, nargs="+", default=list(DEFAULT_YEARS), help="default: 1979-2018")
    p.add_argument("--base-url", default=BASE_URL)
    p.add_argument("--retries", type=int, default=3, help="resume this many times after a dropped connection")
    p.add_argument("--keep-archives", action="store_true", help="keep the zips in <root>/downloads")
    p.add_argument("--dry-run", action="store_true", help="only print what would be downloaded and its size")
    a = p.parse_args(argv)
    todo = [v for v in a.vars if not have_files(a.root, v, a.years)]
    if not todo:
        print(f"all requested WeatherBench files are in {a.root / RESOLUTION}")
        return 0
    sizes = {v: remote_size(build_url(v, base=a.base_url), opener) for v in todo}
    for v in todo:
        size = f"{sizes[v] / 1e9:.2f} GB" if sizes[v] else f"~{APPROX_SIZE_GB.get(v, float('nan')):g} GB (approx.)"
        print(f"  {archive_name(v):40s} {size}")
    known = sum(s if s else APPROX_SIZE_GB.get(v, 0) * 1e9 for v, s in sizes.items())
    print(f"total about {known / 1e9:.1f} GB to download into {a.root / 'downloads'}")
    if a.dry_run:
        return 0
    for v in todo:
        url, dest = build_url(v, base=a.base_url), a.root / "downloads" / archive_name(v)
        for attempt in range(1, a.retries + 1):
            try:
                archive = download(url, dest, sizes[v], opener)
                break
            except OSError as err:  # dropped connection, short read: the .part file is kept and resumed
                print(f"{v}: attempt {attempt}/{a.retries} failed: {type(err).__name__}: {err}")
                if attempt == a.retries:
                    raise
        written = extract_into_layout(archive, a.root, v, None if v == "constants" else a.years)
        print(f"{v}: {len(written)} file(s) in {a.root / RESOLUTION / v}")
        if not a.keep_archives:
            archive.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
