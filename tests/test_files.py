"""Atomic writes: complete or absent, readable like ordinary files."""
import os
import stat

import pytest

from racecar_core.files import atomic_write, read_json, write_json


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "result.json"

    def broken(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_write_json_round_trip_and_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "a" / "r.json", {"x": 1.5, "nested": {"y": [1, 2]}})
    finally:
        os.umask(old)
    assert read_json(path) == {"x": 1.5, "nested": {"y": [1, 2]}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


class _Payload:
    """A pickle that would create a file when unpickled (what a hostile run file could do)."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


def test_checked_files_load_as_plain_data_and_refuse_what_is_damaged(tmp_path):
    import torch

    from racecar_core.files import DamagedFile, load_checked, save_checked, set_aside
    blob = {"arrays": {"w": torch.arange(6.0).reshape(2, 3)}, "evals": [{"step": 0, "acc": 0.5}], "name": "RR"}
    path = save_checked(tmp_path / "result.pt", blob)
    back = load_checked(path)
    assert torch.equal(back["arrays"]["w"], blob["arrays"]["w"]) and back["evals"] == blob["evals"]
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])                                       # truncated
    with pytest.raises(DamagedFile, match="truncated or grown"):
        load_checked(path)
    middle = len(good) // 2
    path.write_bytes(good[:middle] + bytes([good[middle] ^ 0xFF]) + good[middle + 1:])    # one byte flipped
    with pytest.raises(DamagedFile, match="SHA-256 differs"):
        load_checked(path)
    target = tmp_path / "pwned"
    torch.save({"x": _Payload(target)}, path)                                      # hostile, with a matching sum
    from racecar_core.files import _sidecar, sha256_file
    _sidecar(path).write_text(f"{sha256_file(path)} {path.stat().st_size}\n")
    with pytest.raises(DamagedFile, match="cannot be loaded as plain data"):
        load_checked(path)
    assert not target.exists()                                                     # its code never ran
    _sidecar(path).unlink()
    with pytest.raises(DamagedFile, match="no checksum file result.pt.sha256"):
        load_checked(path)
    moved = set_aside(path)
    assert moved.name.startswith("result.pt.damaged-") and moved.exists() and not path.exists()
