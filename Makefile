# racecar: `make figures` regenerates the paper figures, `make test` runs the test suite. Both set up .venv first.
SHELL   := bash
PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PROFILE ?= quick
ONLY    ?=
LAB_ARGS ?=
EXECUTOR ?=
WORKERS ?=
RESUBMIT ?=
REPLICAS ?=
FORCE   ?=
FROM    ?=
CHANNELS ?=
YEARS   ?=
CLIMATOLOGY ?=
ERA5_STORE ?=

FASHION := /usr/share/datasets/fashion-mnist
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: env lock figures report browser test test-fast test-slurm test-bounds lab bench bench-compile bench-weather data-mnist data-peak data-mnist-official data-peak-official data-cifar data-fashion-mnist data-weather clean help

help:
	@echo "make figures [PROFILE=smoke|quick|paper] [ONLY=<notebook stem or glob>] [FORCE=1] [EXECUTOR=local|torchrun WORKERS=N | EXECUTOR=slurm [RESUBMIT=1] [REPLICAS=N]]"
	@echo "make report [PROFILE=...] (report/index.html) | make browser"
	@echo "make test | make test-fast | make test-slurm | make test-bounds | make bench | make bench-compile | make bench-weather | make lab | make env [LOCK=0] | make lock | make clean"
	@echo "make data-mnist | data-peak | data-cifar | data-fashion-mnist | data-weather [CHANNELS=... YEARS=... CLIMATOLOGY=<path or URL> ERA5_STORE=<path or URL>]"
	@echo "make data-mnist-official | data-peak-official [FROM=<SVD-example folder or URL>]  (official SVD-test images)"

# The exact versions of requirements-lock.txt (what CI used); LOCK=0 installs from pyproject.toml's ranges instead.
LOCK    ?= 1

$(VENV)/.installed: pyproject.toml requirements-lock.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	scripts/install-env $(PY) $(LOCK)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (racecar)" >/dev/null
	@touch $@

env: $(VENV)/.installed

# requirements-lock.txt from the installed environment (after changing pyproject.toml: make env LOCK=0 && make lock)
lock: env
	{ sed -n '1,2p' requirements-lock.txt; $(PY) -m pip freeze --exclude-editable --disable-pip-version-check \
	  2>/dev/null | sed 's/+[a-z0-9.]*$$//' | grep -v '^racecar' | LC_ALL=C sort -f; } > requirements-lock.txt.new
	mv requirements-lock.txt.new requirements-lock.txt

# EXECUTOR=local WORKERS=N: the runs train in N worker processes; EXECUTOR=torchrun WORKERS=N: each run on N processes
# (data-parallel); EXECUTOR=slurm: as a submitit array (racecar_repro.executors); calling again re-attaches to the
# jobs still queued or running, RESUBMIT=1 submits the failed ones again, REPLICAS=N trains each run on N GPUs of its job
figures: env
	$(if $(EXECUTOR),RACECAR_EXECUTOR=$(EXECUTOR)) $(if $(WORKERS),RACECAR_WORKERS=$(WORKERS)) \
	  $(if $(RESUBMIT),RACECAR_RESUBMIT=$(RESUBMIT)) $(if $(REPLICAS),RACECAR_REPLICAS=$(REPLICAS)) \
	  $(PY) -m racecar_repro.notebook_runner --profile $(PROFILE) $(if $(ONLY),--only '$(ONLY)') $(if $(FORCE),--force)

# The offline HTML report (report/index.html) from figures/ and build/<PROFILE>/, checked in headless Chromium when
# there is one (make browser)
report: env
	$(PY) scripts/build_report.py --profile $(PROFILE) \
	  $(if $(shell command -v chromium-headless-shell || command -v chromium),--check,)

# Debian's headless Chromium, for the report's browser test
browser:
	@command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
	    chromium-headless-shell >/dev/null; } || \
	  echo "warning: could not install the Debian package chromium-headless-shell; the report's browser test will fail"

# Every test: the unit tests, the integration tests (marked "integration": executors, distributed training, the
# claims' runs, benchmarks, the browser) and every notebook executed in the smoke profile (nbval), in one pytest run.
# Notebook runs and figures go to build/test-*, never to runs/ or figures/.
# The tests marked "slurm" run against a real single-node Slurm that scripts/slurm-local installs (Debian packages,
# root), starts before the tests and stops after them; where it cannot start they are skipped, with the reason.
TEST_ENV := RACECAR_PROFILE=smoke RACECAR_RUNS_DIR=$(CURDIR)/build/test-runs RACECAR_FIGURES_DIR=$(CURDIR)/build/test-figures \
	SLURM_CONF=$(CURDIR)/build/slurm/slurm.conf
SLURM_UP := scripts/slurm-local start || echo "warning: no local Slurm (see above); the tests marked slurm are skipped"
test: env data-fashion-mnist browser
	rm -rf build/test-runs build/test-figures
	$(SLURM_UP)
	$(TEST_ENV) $(PY) -m pytest -p no:cacheprovider tests notebooks --nbval-lax; rc=$$?; scripts/slurm-local stop; exit $$rc

# The cluster path alone, against the real local Slurm (started and stopped around the tests)
test-slurm: env data-fashion-mnist
	$(SLURM_UP)
	$(TEST_ENV) $(PY) -m pytest -p no:cacheprovider -q -m slurm tests; rc=$$?; scripts/slurm-local stop; exit $$rc

# The weather path's tests under the lowest xarray, zarr (2.x), pandas, dask and netCDF4 that pyproject.toml allows,
# installed from PyPI into build/lower-bounds beside the locked .venv (scripts/test-lower-bounds)
test-bounds: env
	scripts/test-lower-bounds $(PY)

# The unit tests alone (not "integration"), for editing: under a minute
test-fast: env
	rm -rf build/test-runs build/test-figures
	$(TEST_ENV) $(PY) -m pytest -p no:cacheprovider -q -m "not integration" tests

# the outputs are kept in benchmarks/results/<date>-<device>-<name>.txt (the source of numbers quoted elsewhere)
bench: env
	$(PY) benchmarks/bench_methods.py --save benchmarks/results
	$(PY) benchmarks/bench_loop.py

bench-compile: env
	$(PY) benchmarks/bench_compile.py

# the weather paper profile's network: Std vs both RR forms per step, and the profile's cost per epoch (slow on a CPU)
bench-weather: env
	$(PY) benchmarks/bench_weather.py --save benchmarks/results

# JupyterLab on notebooks/ with the project's kernel (.venv's kernelspec first on the search path, ahead of any
# user-level "python3"); as root (containers, cloud images) with --allow-root
lab: env
	JUPYTER_PATH=$(CURDIR)/$(VENV)/share/jupyter $(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR)/notebooks \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

data-mnist: env
	$(PY) -m racecar_repro.data.mnist

data-peak: env
	$(PY) -m racecar_repro.data.peak --seed 0

# The official SVD-test images (tum-pbs/racecar SVD-example), sha256-verified, into data/racecar-official.
data-mnist-official: env
	$(PY) -m racecar_repro.data.official mnist $(if $(FROM),--from '$(FROM)')

data-peak-official: env
	$(PY) -m racecar_repro.data.official peak $(if $(FROM),--from '$(FROM)')

data-cifar: env
	$(PY) -m racecar_repro.data.cifar cifar10

# WeatherBench 2's ERA5 at 5.625 deg, the fields and years of notebook 04's profile (quick: Z500, T850, T2M
# 2010-2018, ~0.5 GB; PROFILE=paper: Rasp & Thuerey's 38 input fields 1979-2018, ~18 GB), resumable and checksummed;
# CHANNELS="z500 t850 u250" and/or YEARS=2010-2018 fetch another subset instead.
data-weather: env
	$(PY) -m racecar_repro.data.weatherbench2 --subset $(if $(filter paper,$(PROFILE)),paper,quick) \
	  $(if $(CHANNELS),--channels $(CHANNELS)) $(if $(YEARS),--years $(YEARS)) \
	  $(if $(CLIMATOLOGY),--climatology-source '$(CLIMATOLOGY)') $(if $(ERA5_STORE),--source '$(ERA5_STORE)')

# Real Fashion-MNIST, installable offline from Debian (the CIFAR notebook's smoke profile and CI use it).
data-fashion-mnist:
	@test -d $(FASHION) || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist >/dev/null; } || \
	  echo "warning: could not install the Debian package dataset-fashion-mnist; tests that need it will fail"

clean:
	rm -rf build runs .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
