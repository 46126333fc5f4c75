# Two commands for a new user: `make run` and `make test`. CI (.ci/run) calls `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TVENV  := .tvenv
TPY    := $(TVENV)/bin/python
PRODUCTS ?= 10000
PYTEST_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run run-edge fake-zoho ext venv wheel test test-compiled test-pure test-env lint stubtest bench clean

## Development virtualenv with the package installed editable (the extension built in place).
$(VENV)/.ok: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q "Cython>=3,<4" "setuptools>=69,<81" wheel
	$(PY) -m pip install -q -e '.[demo,test,lint,load]'
	touch $@

## Rebuild the extension in place after editing a .pyx (the editable install imports from the tree).
ext: venv
	$(PY) setup.py -q build_ext --inplace

venv: $(VENV)/.ok

## Serve on HOST:PORT (default 127.0.0.1:8000); embedded PostgreSQL/Redis unless DATABASE_URL/REDIS_URL set.
run: venv
	$(PY) -m server serve --seed-if-empty $(PRODUCTS)

## The same behind nginx (docs/nginx.conf with local values) on EDGE_PORT (default 8080), as in production:
## header/body timeouts, body limit and nginx's own errors as problem+json. Needs the nginx binary.
run-edge: venv
	$(PY) -m server.nginx --with-service --seed-if-empty $(PRODUCTS)

## A fake Zoho Inventory (tests/fakes/zoho.py) with ZOHO_ITEMS items on ZOHO_FAKE_PORT; prints its ZOHO_* settings.
fake-zoho: venv
	$(PY) -m tests.fakes.zoho --items $${ZOHO_ITEMS:-50000} --port $${ZOHO_FAKE_PORT:-8765}

## The wheel (compiled core_ext inside).
wheel: venv
	rm -rf dist
	$(PY) -m pip wheel -q --no-deps . -w dist/

## A fresh virtualenv with the wheel installed: the suite tests what users install, not the source tree.
test-env: wheel
	rm -rf $(TVENV)
	$(PYTHON) -m venv $(TVENV)
	$(TPY) -m pip install -q --upgrade "pip>=24"
	$(TPY) -m pip install -q "$$(ls dist/*.whl)[demo,test,lint,load]"

## Whole suite on the installed wheel, compiled build then pure-Python build; then stubtest and lint.
test: test-env
	$(MAKE) --no-print-directory test-compiled test-pure stubtest lint

test-compiled:
	CORE_EXT_REQUIRE_COMPILED=1 CATALOG_TEST_INSTALLED=1 $(TVENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS)

test-pure:
	CORE_EXT_NO_EXTENSIONS=1 ALLOW_PURE_PYTHON=1 CATALOG_TEST_INSTALLED=1 \
		$(TVENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS)

stubtest:
	cd $(TVENV) && bin/python -m mypy.stubtest core_ext._images core_ext._pages core_ext._catalog core_ext._search

lint: venv
	$(VENV)/bin/ruff check core_ext server tests loadtests setup.py
	$(VENV)/bin/ruff format --check core_ext server tests loadtests setup.py
	$(VENV)/bin/mypy

## Micro-benchmarks of core_ext, compiled vs pure vs the old way, in one run.
bench: venv
	$(PY) loadtests/bench_core.py

## Load tests and the HTTP ceiling benchmark (Locust, wrk): see loadtests/load.mk.
-include loadtests/load.mk

clean:
	rm -rf $(VENV) $(TVENV) build dist *.egg-info core_ext/*.c core_ext/*.so
