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
