# Two entry points a fresh machine needs: `make serve` and `make test` (each installs first).
PY ?= python3
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install serve test lint
install:
	# the CPU wheel first: a bare `torch` requirement would pull a multi-GB CUDA build
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"

serve: install
	lpgnet serve

test: install
	$(PY) -m pytest -q

lint:
	ruff check .
	mypy app
