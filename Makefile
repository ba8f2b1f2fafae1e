# Two commands set everything up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# torch is pinned to the exact build installed here, and installed before anything that depends on
# it: an unpinned or ranged torch would pull gigabytes of CUDA packages.
TORCH := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install install-test docker-ready postgres-ready lab-ready demo notebooks test bench clean lab

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[worker,examples]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PIP) install -q $(TORCH) -e '.[worker,dev]'
	touch $@

# Our own modules' bytecode, as a regular (non-editable) pip install would compile it: with
# PYTHONDONTWRITEBYTECODE set (as on our machines) nothing else writes it, and each kernel, backend
# and worker then compiled ~50 modules from source at every start (the embedded backend's start:
# 0.53 -> 0.38 s; `%load_ext jupyter_gpu`: 0.30 -> 0.12 s).  Incremental: ~0.1 s when up to date.
BYTECODE = @$(PY) -m compileall -q -j 0 jupyter_gpu backend/jupyter_gpu_backend worker_image/jupyter_gpu_worker >/dev/null

install: $(VENV)/.installed
	$(BYTECODE)

install-test: $(VENV)/.installed-test
	$(BYTECODE)

demo: install
	$(VENV)/bin/jupyter-gpu run notebooks/quickstart.ipynb --output notebooks/out

# every example notebook, as CI runs them (failure_demo is marked to fail); exit codes: README
notebooks: install
	$(VENV)/bin/jupyter-gpu run notebooks/*.ipynb --output notebooks/out --junit notebooks/out/junit.xml --report html

# The docker runtime's tests need a Docker Engine and the worker image: installed (apt), started and
# built here when missing, quiet when all is there.  Where no engine can run, it says why and the
# docker tests skip with that reason.
docker-ready: install-test
	@worker_image/docker_ready.sh $(PY)

# The PostgreSQL ledger's tests start a throwaway cluster of their own from the server's binaries
# (initdb, pg_ctl): Debian's postgresql is installed here when they are missing, quiet when present.
# Where it cannot be installed, it says why and those tests skip with that reason.
postgres-ready:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "postgres-ready: installing postgresql (apt)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get update -qq && apt-get install -y -qq postgresql; } </dev/null >/dev/null \
	    || echo "postgres-ready: apt-get install postgresql failed; the PostgreSQL ledger tests will skip" >&2; \
	else echo "postgres-ready: no PostgreSQL server and no apt-get as root; the PostgreSQL ledger tests will skip" >&2; fi

# The lab extension's tests: Debian's chromium for the browser tests (apt, when missing; where it
# cannot be installed they skip saying so), node modules (jlpm, from yarn.lock), the extension built
# and copied into the venv (an editable install copied an older build; a `labextension develop`
# symlink would let the next `pip install -e` write onto the build itself), jest tests.
LAB_SRC := $(wildcard labextension/src/*.ts labextension/style/* labextension/schema/*.json) package.json yarn.lock tsconfig.json
LABPATH := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
$(VENV)/.lab-built: $(VENV)/.installed-test $(LAB_SRC)
	@$(LABPATH) jlpm install > $(VENV)/jlpm.log 2>&1 || { tail -30 $(VENV)/jlpm.log; exit 1; }
	@$(LABPATH) jlpm build:lib:prod > $(VENV)/jlpm-build.log 2>&1 && $(LABPATH) jlpm build:labextension >> $(VENV)/jlpm-build.log 2>&1 \
	  || { tail -30 $(VENV)/jlpm-build.log; exit 1; }  # no clean first: a concurrent pip install -e would rebuild
	rm -rf $(VENV)/share/jupyter/labextensions/jupyter-gpu
	cp -r jupyter_gpu/labextension $(VENV)/share/jupyter/labextensions/jupyter-gpu
	cp install.json $(VENV)/share/jupyter/labextensions/jupyter-gpu/
	touch $@

lab-ready: $(VENV)/.lab-built
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "lab-ready: installing chromium (apt)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    { apt-get update -qq && apt-get install -y -qq chromium; } </dev/null >/dev/null \
	      || echo "lab-ready: apt-get install chromium failed; the browser tests will skip" >&2; \
	  else echo "lab-ready: no /usr/bin/chromium and no apt-get as root; the browser tests will skip" >&2; fi; \
	fi
	$(LABPATH) jlpm test --silent

# pytest exits 5 when it collected nothing: that is a failure of the suite, not a pass.
test: install-test docker-ready postgres-ready lab-ready
	$(PY) -m pytest -q -rs -p no:cacheprovider $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# JupyterLab with the extension (sidebar, footers) on notebooks/, on this machine only; LAB_ARGS adds
# options (LAB_ARGS=--no-browser on a machine without a browser)
LAB_ARGS ?=
lab: $(VENV)/.lab-built
	$(BYTECODE)
	$(LABPATH) $(VENV)/bin/jupyter lab --ip=127.0.0.1 --notebook-dir=notebooks $(LAB_ARGS)

bench: install-test
	$(PIP) install -q $(TORCH) -e '.[worker,dev,ray]'
	@# bench_sync's anchor is rsync (apt, when missing; without it that anchor is skipped, saying so)
	@if ! command -v rsync >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  { apt-get install -y -qq rsync || { apt-get update -qq && apt-get install -y -qq rsync; }; } </dev/null >/dev/null \
	    || echo "bench: apt-get install rsync failed; bench_sync skips its rsync anchor" >&2; fi
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) notebooks/out .pytest_cache
