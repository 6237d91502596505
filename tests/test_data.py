"""racecar_repro.data: the registry of data sets and what is on disk."""
from __future__ import annotations

import pytest

from racecar_repro.data.availability import availability

def test_availability(data_dir):
    for name in ("mnist", "peak"):
        ok, msg = availability(name)
        assert ok and msg
    with pytest.raises(ValueError, match="known data sets: .*mnist.*peak"):
        availability("imagenet")
