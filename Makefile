# racecar: `make figures` regenerates the paper figures, `make test` runs the test suite. Both set up .venv first.
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PROFILE ?= quick
ONLY    ?=
FORCE   ?=

.PHONY: env figures test lab bench data-mnist data-peak clean help

help:
	@echo "make figures [PROFILE=smoke|quick|paper] [ONLY=<notebook stem or glob>] [FORCE=1]"
	@echo "make test | make bench | make lab | make env | make data-mnist | make data-peak | make clean"

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (racecar)" >/dev/null
	@touch $@

env: $(VENV)/.installed

figures: env
	$(PY) -m racecar_core.notebook_runner --profile $(PROFILE) $(if $(ONLY),--only '$(ONLY)') $(if $(FORCE),--force)

# Unit tests, then every notebook executed in the smoke profile (nbval), in one pytest run. Notebook runs and
# figures go to build/test-*, never to runs/ or figures/.
test: env
	rm -rf build/test-runs build/test-figures
	RACECAR_PROFILE=smoke RACECAR_RUNS_DIR=$(CURDIR)/build/test-runs RACECAR_FIGURES_DIR=$(CURDIR)/build/test-figures \
	  $(PY) -m pytest -p no:cacheprovider tests notebooks --nbval-lax

bench: env
	$(PY) benchmarks/bench_methods.py

lab: env
	$(VENV)/bin/jupyter lab notebooks/

data-mnist: env
	$(PY) -m racecar_core.data.mnist

data-peak: env
	$(PY) -m racecar_core.data.peak --seed 0

clean:
	rm -rf build runs .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
