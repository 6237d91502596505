"""What every data download shares: a timeout so that a closed network fails fast, one-line error summaries, reading a
file from a URL or a local folder, and fetching one against its SHA-256 (``fetch_verified``). torchvision's data sets
(MNIST, Fashion-MNIST, CIFAR) download and check themselves (MD5, ``torchvision_splits``); WeatherBench 2's store is
copied by xarray and checked against a manifest of SHA-256s (``weatherbench2``)."""
from __future__ import annotations

import hashlib
import socket
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
DOWNLOAD_TIMEOUT_S = 30.0


def with_download_timeout(fn: Callable[[], T], timeout: float = DOWNLOAD_TIMEOUT_S) -> T:
    """Call ``fn`` with a socket timeout, so a download on a closed network fails instead of hanging."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return fn()
    finally:
        socket.setdefaulttimeout(old)


def torchvision_splits(cls, root: str | Path, download: bool = False) -> tuple:
    """(train, test) of the torchvision data set ``cls`` under ``root``; ``download`` fetches its files first (under
    the timeout; torchvision checks their MD5s)."""
    def both() -> tuple:
        return cls(str(root), train=True, download=download), cls(str(root), train=False)

    return with_download_timeout(both) if download else both()


def has_files(folder: str | Path, names: Iterable[str]) -> bool:
    """Whether every one of ``names`` is a file in ``folder``."""
    return all((Path(folder) / n).is_file() for n in names)


def first_line(err: BaseException) -> str:
    """``Type: first line of the message``, for short error summaries."""
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def read_bytes(source: str | Path, rel: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    """The bytes of ``rel`` under a URL base (http, https, file) or a local folder. Errors are ``OSError``s that
    name the URL or path and say why in one line."""
    if "://" in str(source):
        url = f"{str(source).rstrip('/')}/{rel}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.read()
        except Exception as err:  # refused, DNS failure, timeout, HTTP 404, missing file:// file, ...
            raise OSError(f"downloading {url} failed ({first_line(err)})") from err
    path = Path(source).expanduser() / rel
    try:
        return path.read_bytes()
    except OSError as err:
        raise OSError(f"reading {path} failed ({first_line(err)})") from err


class ChecksumError(ValueError):
    """A fetched file does not match its SHA-256; the message names the file and both digests."""


def fetch_verified(source: str | Path, rel: str, dest: str | Path, sha256: str, hint: str = "",
                   timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Copy or download ``rel`` from ``source`` (``read_bytes``) to ``dest`` when its SHA-256 is ``sha256``;
    otherwise nothing is written, a wrong file at ``dest`` is removed, and ``ChecksumError`` says what to do
    (``hint``). The write is atomic."""
    from racecar_core.files import atomic_write
    data = read_bytes(source, rel, timeout)
    got = hashlib.sha256(data).hexdigest()
    if got != sha256.lower():
        Path(dest).unlink(missing_ok=True)
        retry = f", then retry with {hint}" if hint else ""
        raise ChecksumError(f"racecar: {rel} from {source} has the wrong sha256: expected {sha256.lower()}, got "
                            f"{got}; nothing was written for it. Check the source{retry}")
    return Path(atomic_write(dest, lambda tmp: Path(tmp).write_bytes(data)))
