"""scripts/compare_results.py: finds a changed number, ignores what differs between two runs of the same code."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("compare_results", ROOT / "scripts" / "compare_results.py")
compare_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_results)


def _write(root: Path, name: str, obj: dict) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "results.json").write_text(json.dumps(obj))


def test_changes_are_found_and_run_to_run_noise_is_not(tmp_path, capsys):
    before = {"provenance": {"git_commit": "a"}, "table": {"RR": {"acc": 0.5, "wall_time_s": 3.0}},
              "per_run": {"RR/seed0": {"acc": 0.5, "trained_by": {"commit": "a"}, "curve": [0.1, 0.2]}}}
    same = {"provenance": {"git_commit": "b"}, "table": {"RR": {"acc": 0.5 + 1e-15, "wall_time_s": 9.0}},
            "per_run": {"RR/seed0": {"acc": 0.5, "trained_by": {"commit": "b"}, "curve": [0.1, 0.2]}},
            "claim": {"holds": True}}
    _write(tmp_path / "a", "01_x", before)
    _write(tmp_path / "b", "01_x", same)
    assert compare_results.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "+ 01_x/claim: new" in capsys.readouterr().out
    changed = json.loads(json.dumps(same))
    changed["per_run"]["RR/seed0"]["curve"] = [0.1, 0.25]
    del changed["table"]["RR"]["acc"]
    _write(tmp_path / "c", "01_x", changed)
    changes, _ = compare_results.compare(tmp_path / "a", tmp_path / "c")
    assert changes == ["- 01_x/table/RR/acc: missing after", "! 01_x/per_run/RR/seed0/curve[1]: 0.2 -> 0.25"]
    assert compare_results.main([str(tmp_path / "a"), str(tmp_path / "missing")]) == 1
