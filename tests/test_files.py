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


def _killed_at_the_rename(files, path, monkeypatch) -> None:
    """Make ``save_checked`` die just before it renames its new file onto ``path``."""
    real_replace = files.os.replace

    def replace(src, dst):
        if str(dst) == str(path):
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)


def _killed_at_the_last_checksum_write(files, path, monkeypatch) -> None:
    """Make ``save_checked`` die after its rename, before it writes the final checksum file (its second write)."""
    real_write, calls = files.atomic_write, []

    def write(target, how):
        calls.append(target)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_write(target, how)

    monkeypatch.setattr(files, "atomic_write", write)


def _save_killed(files, path, obj, monkeypatch, kill) -> None:
    """``save_checked(path, obj)`` killed where ``kill`` says."""
    kill(files, path, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        files.save_checked(path, obj)
    monkeypatch.undo()


def test_replacing_a_checked_file_never_leaves_a_sound_one_looking_damaged(tmp_path, monkeypatch):
    """A job killed while it replaces its checkpoint leaves the old one or the new one, each loadable: never a sound
    file whose checksum file disagrees (which would throw the run's progress away)."""
    import racecar_core.files as files
    path = files.save_checked(tmp_path / "checkpoint.pt", {"step": 1})
    _save_killed(files, path, {"step": 2}, monkeypatch, _killed_at_the_rename)
    assert files.load_checked(path) == {"step": 1}             # the old file, listed beside the new checksum
    _save_killed(files, path, {"step": 3}, monkeypatch, _killed_at_the_last_checksum_write)
    assert files.load_checked(path) == {"step": 3}
    assert len(files._sidecar(path).read_text().splitlines()) == 2
    files.save_checked(path, {"step": 4})
    assert files.load_checked(path) == {"step": 4} and len(files._sidecar(path).read_text().splitlines()) == 1
    assert not list(tmp_path.glob(".*.tmp"))                    # no temporary files left behind


def test_interrupted_first_saves_and_repeated_interruptions_leave_a_loadable_file(tmp_path, monkeypatch):
    """The first save (a result.pt) killed right after its rename still has its checksum; two saves killed in a row
    before their renames leave the file in place listed."""
    import racecar_core.files as files
    path = tmp_path / "result.pt"
    _save_killed(files, path, {"step": 1}, monkeypatch, _killed_at_the_last_checksum_write)
    assert files.load_checked(path) == {"step": 1}
    for step in (2, 3):                                          # killed twice in the same place
        _save_killed(files, path, {"step": step}, monkeypatch, _killed_at_the_rename)
        assert files.load_checked(path) == {"step": 1}
    assert len(files._sidecar(path).read_text().splitlines()) == 2
    files.save_checked(path, {"step": 4})
    assert files.load_checked(path) == {"step": 4} and len(files._sidecar(path).read_text().splitlines()) == 1

