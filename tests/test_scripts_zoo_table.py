"""scripts/zoo_table.py: the README's and docs/reverse-pass.md's tables of torchvision families are the zoo test's."""
import importlib.util
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("zoo_table", ROOT / "scripts" / "zoo_table.py")
zoo_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zoo_table)


def test_the_committed_tables_are_made_from_the_test(capsys):
    assert zoo_table.main(["--check"]) == 0, capsys.readouterr().out
    zoo, unsupported = zoo_table._zoo()
    by_family = zoo_table.table("family")
    assert all(f"| {name} |" in by_family for name, _, _ in zoo)
    assert all(why in zoo_table.table("status") for why in unsupported.values())


def test_a_stale_table_is_found_and_rewritten(tmp_path, monkeypatch, capsys):
    for rel in zoo_table.FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "test_reverse_torchvision_zoo.py", tmp_path / "tests")
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("| trains (", "| maybe ("))
    monkeypatch.setattr(zoo_table, "ROOT", tmp_path)
    assert zoo_table.main(["--check"]) == 1 and "README.md" in capsys.readouterr().out
    assert zoo_table.main([]) == 0 and zoo_table.main(["--check"]) == 0 and "| trains (" in readme.read_text()
