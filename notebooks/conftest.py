"""``pytest --nbval notebooks/`` (or ``--nbval-lax``): the notebooks in the smoke profile, their runs and figures in
build/nbval-*/ (never runs/ or figures/), and each notebook's claim cell compared with the output it stores,
through the sanitizer in nbval-sanitize.cfg. What ``make test`` sets (``RACECAR_*``) is kept."""
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE.parent / "build"
os.environ.setdefault("RACECAR_PROFILE", "smoke")
os.environ.setdefault("RACECAR_RUNS_DIR", str(BUILD / "nbval-runs"))
os.environ.setdefault("RACECAR_FIGURES_DIR", str(BUILD / "nbval-figures"))


def pytest_configure(config):
    option = config.option
    if getattr(option, "nbval_sanitize_with", "absent") is None:     # nbval loaded, no sanitizer given
        option.nbval_sanitize_with = str(HERE / "nbval-sanitize.cfg")
