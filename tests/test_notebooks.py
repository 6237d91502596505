"""The notebooks: valid, committed with no output but their claim's (sanitised), of one shape, with the library's
parameter names; a bare ``pytest --nbval notebooks/`` runs the smoke profile and compares the claim.

(Running them is the job of nbval in ``make test``; these check what a run would not notice.)
"""
import ast
import json
import re
import sys
from pathlib import Path

import pytest

from racecar_repro.experiments import any_network, cifar, gan, info_planes, svd, texture_shape, weather

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import store_claim_outputs  # noqa: E402

pytestmark = pytest.mark.integration  # notebooks / the report in a browser

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# notebook -> (experiment module, its profiles), and the parameters a notebook may have beyond the experiment's
EXPERIMENT_OF = {"01_svd_mnist": (svd, svd.PROFILES["mnist"]), "02_svd_peak": (svd, svd.PROFILES["peak"]),
                 "03_cifar_resnet110": (cifar, cifar.PROFILES), "04_weatherbench": (weather, weather.PROFILES),
                 "05_information_planes": (info_planes, info_planes.PROFILES),
                 "06_rr_on_your_network": (any_network, any_network.PROFILES),
                 "07_texture_shape": (texture_shape, texture_shape.PROFILES), "08_gan": (gan, gan.PROFILES)}
NOTEBOOK_ONLY = {"profile", "output", "sweep", "sweep_lambdas", "sweep_seeds", "lambda_study", "lambda_sweep"}


def _code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def _parameters(path: Path) -> dict:
    """The parameters cell's assignments, name -> value."""
    nb = json.loads(path.read_text())
    (cell,) = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    tree = ast.parse("".join(cell["source"]))
    return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets}


def test_every_numbered_notebook_is_known_here():
    assert [p.stem for p in NOTEBOOKS] == sorted(EXPERIMENT_OF)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_valid_and_store_only_their_claims_sanitised_output(path):
    import nbformat
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)  # ids included: new cells need one
    assert all("id" in c for c in nb.cells)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code[:-1])
    assert all("nbval-ignore-output" in c.metadata.get("tags", []) for c in code[:-1])
    assert "nbval-check-output" in code[-1].metadata.get("tags", []) and code[-1].execution_count == len(code)
    (stored,) = code[-1].outputs           # scripts/store_claim_outputs.py: one stdout stream, already sanitised
    assert stored.output_type == "stream" and stored.name == "stdout" and "wrote RESULTS_JSON" in stored.text
    assert store_claim_outputs.sanitize(stored.text) == stored.text
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1


def test_a_bare_nbval_run_uses_the_smoke_profile_and_compares_the_claim(tmp_path):
    """``pytest --nbval notebooks/`` as users run it (strict mode, no RACECAR_* set): the conftest picks the smoke
    profile and build folders, and the claim cell must print what it stores."""
    import os
    import shutil
    import subprocess
    import sys
    folder = tmp_path / "notebooks"
    folder.mkdir()
    name = "03_cifar_resnet110"    # the notebook whose smoke run is the shortest
    for file in ("conftest.py", "nbval-sanitize.cfg", f"{name}.ipynb"):
        shutil.copy(ROOT / "notebooks" / file, folder / file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RACECAR_")}

    def nbval() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--nbval", str(folder)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    nb = json.loads((folder / f"{name}.ipynb").read_text())
    claim = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
    assert any("rr_vs_std VERDICT" in line for line in claim["outputs"][0]["text"])
    claim["outputs"][0]["text"] = [line.replace("rr_vs_std VERDICT", "rr_beats_std VERDICT")
                                   for line in claim["outputs"][0]["text"]]
    (folder / f"{name}.ipynb").write_text(json.dumps(nb))
    changed = nbval()     # one run (a notebook run costs half a minute): the stored claim changed, so it must fail,
    assert changed.returncode != 0 and "rr_beats_std" in changed.stdout   # the rest of the cells having passed
    assert "1 failed" in changed.stdout and "passed" in changed.stdout, changed.stdout[-3000:]
    results = tmp_path / "build" / "nbval-figures" / name / "results.json"
    assert json.loads(results.read_text())["provenance"]["profile"] == "smoke"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_carry_the_library_names(path):
    module, profiles = EXPERIMENT_OF[path.stem]
    params = _parameters(path)
    known = set().union(*profiles.values())
    assert set(params) - NOTEBOOK_ONLY <= known, f"not parameters of {module.__name__}: {set(params) - known}"
    assert params["output"] == path.stem and params["profile"] is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_shape_parameters_run_figures_claim_results(path):
    module = EXPERIMENT_OF[path.stem][0].__name__.rsplit(".", 1)[1]
    cells = _code_cells(path)
    setup, last = cells[1], cells[-1]
    assert f"result = {module}.run(" in setup and "figures = FigureFolder(output, result)" in setup
    assert f"{module}.claim(result)" in last and f"figures.write_results({module}.results(result" in last
    code = "\n".join(cells)
    assert not re.search(r"\[\(|\[\"runs\"\]|\bout\[", code), "results are typed: no indexing by tuple keys"
    assert "save_figure(" not in code and "provenance(" not in code  # one way to write: FigureFolder


def test_the_two_svd_notebooks_share_every_code_cell():
    mnist, peak = (_code_cells(ROOT / "notebooks" / f"{n}.ipynb") for n in ("01_svd_mnist", "02_svd_peak"))
    assert mnist[1:] == peak[1:]  # all but the parameters cell
    pm, pp = (_parameters(ROOT / "notebooks" / f"{n}.ipynb") for n in ("01_svd_mnist", "02_svd_peak"))
    assert set(pm) == set(pp) and (pm["dataset"], pp["dataset"]) == ("mnist", "peak")


def test_figure_modules_take_typed_results():
    for f in (ROOT / "racecar_core" / "experiments").glob("*_figures.py"):
        text = f.read_text()
        assert not re.search(r"\[\"runs\"\]|\bout\[|out: dict", text), f.name
