# Two entry points a fresh machine needs: `make serve` and `make test`. Both create the project's
# virtualenv .venv on first use (Python 3.11 or newer; developed and tested on CPython 3.11.7) and
# reuse it after; it is reinstalled when pyproject.toml changes. Nothing is installed into the
# interpreter that creates it. The venv sees the machine's site-packages (VENV_FLAGS), so a torch
# or a CI image's packages already installed are reused, not downloaded again; on a bare machine
# everything goes into .venv. `make VENV_FLAGS= test` builds an isolated one.
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?= --system-site-packages
PY := $(VENV)/bin/python
# two pytest workers (pytest-xdist), a test file per worker (module fixtures and in-file order kept):
# the suite is CPU-bound in one process, so on these 2-core machines this halves its wall time
TEST_WORKERS ?= 2
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install serve test lint clean-venv
install: $(VENV)/.installed

$(PY):
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	# the CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	touch $@

serve: install
	$(VENV)/bin/lpgnet serve

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy app model bench

clean-venv:
	rm -rf $(VENV)
