# Two commands on a fresh machine: `make run` (serve on http://127.0.0.1:8000/) and `make test`.
# Everything goes through .venv/bin/python -m ...: the venv's console-script shebangs may be stale.

PYTHON_BOOTSTRAP ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Written after a successful install; older than a requirements file means install again.
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: venv install migrate collectstatic run test lint bench

venv: $(PY)
install: $(STAMP)

$(PY):
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)

$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

migrate: install
	$(PY) manage.py migrate --noinput

collectstatic: install
	$(PY) manage.py collectstatic --noinput -v 0

run: migrate collectstatic
	$(PY) -m digitsite.run

# The environment passes through: CI=true, DATABASE_URL and REDIS_URL reach the tests as set.
test: install
	$(PY) -m pytest $(ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# Round-trip time of one drawing, POST to done, on a stack the script starts itself.
bench: install
	$(PY) bench/roundtrip_bench.py $(ARGS)
