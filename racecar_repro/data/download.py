"""What every data download shares: a timeout so that a closed network fails fast, one-line error summaries, and
reading a file from a URL or a local folder."""
from __future__ import annotations

import socket
import urllib.request
from pathlib import Path
from typing import Callable, TypeVar

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
