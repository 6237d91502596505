"""pyproject.toml and environment.yml install the same packages; CI runs the README's test command."""
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(pip) - {"-e ."} == wanted
    assert "python=3.11" in env["dependencies"]
    assert "torch==2.14.1" in wanted and "torchvision==0.29.1" in wanted


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make figures" in readme
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"


@pytest.mark.integration
def test_readme_example_runs():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## RR on your own network")[1].split("```python")[1].split("```")[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert float(namespace["rec"].detach()) > 0 and namespace["out"].shape == (32, 10)


def test_every_test_file_is_named_after_what_it_tests():
    """``tests/test_<module>.py`` tests ``racecar_core/<module>.py`` or ``racecar_repro/<module>.py`` (``/`` written
    ``_``: ``test_data_peak.py``, ``test_experiments_svd.py``), possibly with a suffix
    (``test_experiments_svd_claims.py``); a few test the project around the library (notebooks, packaging, the
    import graph, benchmarks, scripts)."""
    modules = {"_".join(p.relative_to(ROOT / pkg).with_suffix("").parts).removesuffix("___init__").removesuffix("__init__")
               for pkg in ("racecar_core", "racecar_repro") for p in (ROOT / pkg).rglob("*.py")}
    modules.discard("")
    around = {"notebooks", "packaging", "import_graph", "benchmarks", "scripts"}
    for test in (ROOT / "tests").glob("test_*.py"):
        stem = test.stem.removeprefix("test_")
        owner = [m for m in modules | around if stem == m or stem.startswith(m + "_")]
        assert owner, f"{test.name}: no module {stem.replace('_', '/')}.py; name it after what it tests"


def _lock() -> dict[str, str]:
    lines = (ROOT / "requirements-lock.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    assert all(len(p) == 2 for p in pins), "requirements-lock.txt: one 'name==version' per line"
    return {name.lower().replace("_", "-"): version for name, version in pins}


def test_the_lock_pins_every_dependency_within_pyprojects_ranges_and_is_what_is_installed():
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from packaging.version import Version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = _lock()
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in lock, f"{name} is not in requirements-lock.txt: run make lock"
        assert Version(lock[name]) in req.specifier, f"{name}=={lock[name]} is outside pyproject's {req.specifier}"
        installed = version(req.name).split("+")[0]   # make env installs with the lock as constraints
        assert Version(installed) == Version(lock[name]), f"{name}: {installed} installed, lock says {lock[name]}"


def test_licence_citation_and_binder_environment():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == {"text": "MIT"}
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT" and cff["message"] and cff["authors"]
    paper = cff["preferred-citation"]
    assert paper["doi"] == "10.1007/s00521-022-07892-0" and paper["title"] == "Reviving Autoencoder Pretraining"
    assert [a["family-names"] for a in paper["authors"]] == ["Xie", "Thuerey"]
    # Binder / repo2docker: conda runs the pip list from environment.yml's folder, so "-e ." installs racecar_core
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e ." in pip
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert found["include"] == ["racecar_core*", "racecar_repro*"]
    assert (ROOT / "racecar_core" / "__init__.py").exists() and (ROOT / "racecar_repro" / "__init__.py").exists()
    readme = (ROOT / "README.md").read_text()
    assert "CITATION.cff" in readme and "LICENSE" in readme and "mybinder.org" in readme


@pytest.mark.integration
def test_make_lab_starts_as_root_on_the_notebooks_with_the_projects_kernel():
    import json
    import os
    import select
    import socket
    import subprocess
    import sys
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = f"--no-browser --ServerApp.port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token=racecar-test"
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS={args}", f"VENV={Path(sys.prefix)}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    text = ""
    try:
        deadline = time.time() + 120
        while time.time() < deadline and f":{port}/lab" not in text and proc.poll() is None:
            if select.select([proc.stdout], [], [], 1.0)[0]:
                text += proc.stdout.readline()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    assert "is running at" in text and f":{port}/lab" in text, text       # as root too (--allow-root)
    assert f"Serving notebooks from local directory: {ROOT / 'notebooks'}" in text
    env = dict(os.environ, JUPYTER_PATH=str(Path(sys.prefix) / "share" / "jupyter"))
    specs = json.loads(subprocess.run([str(Path(sys.prefix) / "bin" / "jupyter"), "kernelspec", "list", "--json"],
                                      env=env, capture_output=True, text=True, check=True).stdout)["kernelspecs"]
    kernel = specs["python3"]["spec"]
    assert kernel["display_name"] == "Python 3 (racecar)"
    assert Path(kernel["argv"][0]).parent.resolve() == (Path(sys.prefix) / "bin").resolve()


def test_readme_links_the_report_and_shows_key_figures_that_exist():
    import re
    readme = (ROOT / "README.md").read_text()
    assert "make report" in readme and "report/index.html" in readme
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", readme)
    assert len(images) >= 3
    for path in images:
        assert (ROOT / path).is_file(), f"README shows {path}, which is not in the repository"


def test_the_weather_packages_lower_bounds_are_the_versions_make_test_bounds_runs():
    """pyproject.toml's ``>=`` bounds of the weather path's packages are the versions scripts/test-lower-bounds
    installs and runs the weather tests with (the code calls ``to_zarr(zarr_format=...)``: xarray 2024.10 or newer)."""
    script = (ROOT / "scripts" / "test-lower-bounds").read_text()
    pins = dict(p.split("==") for p in script.split("LOWEST=(")[1].split(")")[0].split())
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = dict(d.split(">=") for d in deps if ">=" in d)
    assert set(pins) == {"xarray", "zarr", "numcodecs", "pandas", "dask", "netCDF4"}
    assert all(bounds[p] == v for p, v in pins.items() if p != "numcodecs"), (pins, bounds)
