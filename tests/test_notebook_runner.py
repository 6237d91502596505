"""Tests for the incremental notebook runner (real kernels, so executions are kept few)."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import nbformat
import pytest

from racecar_repro import notebook_runner as nr

WRITE_OUTPUTS = """
import json, os, pathlib, struct, zlib
stem = {stem!r}
out = pathlib.Path(os.environ["RACECAR_FIGURES_DIR"]) / stem
out.mkdir(parents=True, exist_ok=True)
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(b"\\x00\\x00")) + chunk(b"IEND", b""))
(out / "fig.png").write_bytes(png)
assert os.environ["RACECAR_PROFILE"] == profile
(out / "results.json").write_text(json.dumps({{"profile": profile}}))
"""


def make_notebook(path: Path, requires: list[str] | None = None, fail: bool = False) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = None")
    params.metadata["tags"] = ["parameters"]
    body = "raise RuntimeError('boom from notebook')" if fail else WRITE_OUTPUTS.format(stem=path.stem)
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if requires:
        nb.metadata["racecar"] = {"requires": requires}
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Notebook/build/figure dirs in tmp_path and a fake data module where only 'peak' is present."""
    figs = tmp_path / "figures"
    monkeypatch.setenv("RACECAR_FIGURES_DIR", str(figs))
    fake = types.ModuleType("racecar_repro.data.availability")

    def availability(name: str) -> tuple[bool, str]:
        if name == "peak":
            return True, "peak: available"
        return False, f"{name} not found; fetch it with: make data-{name}"

    fake.availability = availability
    monkeypatch.setitem(sys.modules, "racecar_repro.data.availability", fake)
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    base = ["--notebooks-dir", str(nbdir), "--build-dir", str(tmp_path / "build"), "--profile", "smoke"]
    return types.SimpleNamespace(nbdir=nbdir, figs=figs, build=tmp_path / "build", args=base)


@pytest.mark.integration
def test_run_skip_uptodate_force(env, capsys):
    make_notebook(env.nbdir / "01_ok.ipynb", requires=["peak"])
    make_notebook(env.nbdir / "02_needs_mnist.ipynb", requires=["mnist"])
    (env.nbdir / "notes.ipynb").write_text("{}")  # not numbered: ignored

    assert nr.main(env.args) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[-1]
    row1 = next(line for line in table.splitlines() if line.startswith("01_ok.ipynb"))
    row2 = next(line for line in table.splitlines() if line.startswith("02_needs_mnist.ipynb"))
    assert row1.split()[1:2] == ["smoke"] and row1.split()[3] == "1" and row1.endswith("ran")
    assert "skipped:" in row2 and "make data-mnist" in row2
    assert (env.build / "smoke" / "01_ok.ipynb").is_file()
    assert (env.build / "smoke" / "01_ok.stamp").is_file()
    assert not (env.build / "smoke" / "02_needs_mnist.ipynb").exists()
    assert "injected-parameters" not in (env.nbdir / "01_ok.ipynb").read_text()  # source untouched
    assert (env.figs / "01_ok" / "results.json").read_text() == '{"profile": "smoke"}'

    executed = env.build / "smoke" / "01_ok.ipynb"
    mtime = executed.stat().st_mtime_ns
    assert nr.main(env.args) == 0
    row1 = next(line for line in capsys.readouterr().out.splitlines()
                if line.startswith("01_ok.ipynb") and "smoke" in line)
    assert row1.endswith("up to date") and row1.split()[3] == "0"
    assert executed.stat().st_mtime_ns == mtime  # not executed again

    assert nr.main(env.args + ["--force", "--only", "01_*"]) == 0
    out = capsys.readouterr().out
    assert "02_needs_mnist" not in out
    assert next(line for line in out.splitlines() if line.startswith("01_ok.ipynb  ")).endswith("ran")
    assert executed.stat().st_mtime_ns != mtime


@pytest.mark.integration
def test_failure_does_not_stop_others(env, capsys):
    make_notebook(env.nbdir / "01_bad.ipynb", fail=True)
    make_notebook(env.nbdir / "02_good.ipynb")
    assert nr.main(env.args) == 1
    table = capsys.readouterr().out.split("\n\n")[-1]
    assert "FAILED: RuntimeError: boom from notebook" in table
    assert next(line for line in table.splitlines() if line.startswith("02_good")).endswith("ran")
    assert not (env.build / "smoke" / "01_bad.stamp").exists()
    assert (env.figs / "02_good" / "results.json").is_file()


def test_unknown_only_lists_notebooks(env, capsys):
    make_notebook(env.nbdir / "01_ok.ipynb")
    with pytest.raises(SystemExit) as exc:
        nr.main(env.args + ["--only", "99_*"])
    assert exc.value.code != 0
    assert "01_ok.ipynb" in capsys.readouterr().err


def test_stamp_depends_on_profile_and_data(env):
    nb = make_notebook(env.nbdir / "01_ok.ipynb")
    a = nr.stamp_hash(nb, "smoke", [])
    assert a == nr.stamp_hash(nb, "smoke", [])
    assert a != nr.stamp_hash(nb, "quick", [])
    assert a != nr.stamp_hash(nb, "smoke", [("peak", True, "peak: available")])


def test_missing_data_module_skips(env, monkeypatch):
    monkeypatch.setitem(sys.modules, "racecar_repro.data.availability", None)  # import raises ImportError
    nb = make_notebook(env.nbdir / "01_ok.ipynb", requires=["mnist"])
    o = nr.run_one(nb, "smoke", env.build)
    assert o.status.startswith("skipped:") and "availability" in o.status


def test_requirements_may_depend_on_the_profile(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["racecar"] = {"requires": {"smoke": ["fashion_mnist"], "default": ["cifar10"]}}
    path = tmp_path / "03_x.ipynb"
    nbformat.write(nb, path)
    assert nr.requirements(path, "smoke") == ["fashion_mnist"]
    assert nr.requirements(path, "quick") == ["cifar10"]
    assert nr.requirements(path) == ["cifar10"]


@pytest.mark.integration
def test_optional_data_never_skips_but_its_arrival_reruns(env, monkeypatch):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(WRITE_OUTPUTS.format(stem="02_opt"))]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["racecar"] = {"requires": ["peak"], "optional": ["peak_official"]}
    path = env.nbdir / "02_opt.ipynb"
    nbformat.write(nb, str(path))
    assert nr.requirements(path, "smoke", "optional") == ["peak_official"]
    assert nr.run_one(path, "smoke", env.build).status == "ran"  # peak_official is absent: runs all the same
    assert nr.run_one(path, "smoke", env.build).status == "up to date"
    fake = sys.modules["racecar_repro.data.availability"]
    monkeypatch.setattr(fake, "availability", lambda name: (True, f"{name}: available"))  # the official images arrive
    assert nr.run_one(path, "smoke", env.build).status == "ran"


def test_progress_condenses_bars_and_passes_lines_through():
    import io
    log, out = io.StringIO(), io.StringIO()
    p = nr.Progress(log, out, every=3600)
    p.write("[cifar] run 1/2 RR/seed0: trained (1.0 s)\n")
    p.write("RR/seed0 (1/2):   0%|          | 0/100 [00:00<?, ?it/s]\r")
    p.write("RR/seed0 (1/2):  40%|####      | 40/100 [00:02<00:03, 20.0it/s]\r")   # within `every`: not shown
    p.write("RR/seed0 (1/2): 100%|##########| 100/100 [00:05<00:00, 20.0it/s]\n")
    p.write("claim: holds\npartial ")
    p.write("line\n")
    assert log.getvalue().count("it/s") == 3 and "partial line" in log.getvalue()    # the log keeps everything
    lines = out.getvalue().splitlines()
    assert lines == ["    | [cifar] run 1/2 RR/seed0: trained (1.0 s)",
                     "    | RR/seed0 (1/2) step 0/100, ETA ? (00:00)",
                     "    | RR/seed0 (1/2) step 100/100, done (00:05)",
                     "    | claim: holds", "    | partial line"]


def test_cpu_threads_counts_what_this_process_may_use():
    import os
    assert 1 <= nr.cpu_threads() <= (os.cpu_count() or 1)


@pytest.mark.integration
def test_a_run_shows_progress_and_writes_the_full_log(env, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    path = make_notebook(env.nbdir / "01_chatty.ipynb")
    nb = nbformat.read(str(path), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import os, sys, time\nfrom tqdm import tqdm\nprint('threads', os.environ['OMP_NUM_THREADS'])\n"
        "for _ in tqdm(range(3), desc='Std/seed0 (1/1)', mininterval=0, file=sys.stderr):\n    time.sleep(0.01)\n"
        "print('claim holds')"))
    nbformat.write(nb, str(path))
    assert nr.main(env.args) == 0
    out = capsys.readouterr().out
    assert f"    | threads {nr.cpu_threads()}" in out and "    | claim holds" in out
    assert "    | Std/seed0 (1/1) step 3/3, done" in out
    log = env.build / "smoke" / "01_chatty.log"
    assert f"full log: {log}" in out
    text = log.read_text()
    assert "claim holds" in text and "3/3" in text and "threads" in text
