"""pyproject.toml and environment.yml install the same packages; CI runs the README's test command."""
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip) == wanted
    assert "python=3.11" in env["dependencies"]
    assert "torch==2.14.1" in wanted and "torchvision==0.29.1" in wanted


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make figures" in readme
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"


def test_readme_example_runs():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## RR on your own network")[1].split("```python")[1].split("```")[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert float(namespace["rec"].detach()) > 0 and namespace["out"].shape == (32, 10)


def test_every_test_file_is_named_after_what_it_tests():
    """``tests/test_<module>.py`` tests ``racecar_core/<module>.py`` (``/`` written ``_``: ``test_data_peak.py``,
    ``test_experiments_svd.py``), possibly with a suffix (``test_experiments_svd_claims.py``); a few test the
    project around the library (notebooks, packaging, benchmarks, scripts)."""
    pkg = ROOT / "racecar_core"
    modules = {"_".join(p.relative_to(pkg).with_suffix("").parts).removesuffix("___init__").removesuffix("__init__")
               for p in pkg.rglob("*.py")}
    modules.discard("")
    around = {"notebooks", "packaging", "benchmarks", "scripts"}
    for test in (ROOT / "tests").glob("test_*.py"):
        stem = test.stem.removeprefix("test_")
        owner = [m for m in modules | around if stem == m or stem.startswith(m + "_")]
        assert owner, f"{test.name}: no racecar_core module {stem.replace('_', '/')}.py; name it after what it tests"
