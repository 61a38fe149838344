# proxysigv4 — make demo | test | run | install | lint | bench (bench-streaming, bench-hotpath, bench-breakdown)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= proxysigv4.yaml
PORT ?= 8080

.PHONY: install test lint format run demo clean bench bench-streaming bench-hotpath bench-breakdown image wheels

install: $(STAMP)

# The first interpreter >= 3.12 (mitmproxy 12 needs it); .python-version selects one on pyenv machines.
FIND_PYTHON = for c in python3.13 python3.12 python3; do \
	  if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then echo $$c; break; fi; \
	done
$(STAMP): setup.cfg pyproject.toml
	@py=$$($(FIND_PYTHON)); \
	if [ -z "$$py" ]; then \
	  echo "error: proxysigv4 needs Python >= 3.12 (mitmproxy 12 requires it); install python3.12 or newer and retry" >&2; exit 1; \
	fi; \
	echo "using $$py ($$($$py --version))"; \
	$$py -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The Node clients of the connection matrix (tests/test_e2e_clients.py): the AWS SDK for JavaScript,
# installed as package-lock.json pins it.
NODE_STAMP := tests/node/node_modules/.installed
$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --silent
	touch $@

lint: install
	$(VENV)/bin/ruff check addon tests bench peers
	$(VENV)/bin/ruff format --check addon tests bench peers
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format addon tests bench peers
	$(VENV)/bin/ruff check --fix addon tests bench peers

test: install $(NODE_STAMP) lint
	$(VENV)/bin/pytest -q -rs

run: install
	$(VENV)/bin/proxysigv4 run -c $(CONFIG) -p $(PORT)

# The demo needs only the package and its demo extra (moto server), in a venv of its own.
DEMO_VENV := .venv-demo
$(DEMO_VENV)/.installed: setup.cfg pyproject.toml
	@py=$$($(FIND_PYTHON)); \
	if [ -z "$$py" ]; then echo "error: proxysigv4 needs Python >= 3.12" >&2; exit 1; fi; \
	$$py -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet -e '.[demo]'
	touch $@

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/proxysigv4 demo

clean:
	rm -rf $(VENV) $(DEMO_VENV) .pytest_cache .ruff_cache .hypothesis

# Throughput against bare mitmproxy, the in-process hot path and 1 GiB streaming (< 3 min).
# The benchmark imports the local peers (peers/) from the project's root.
BENCH_ENV := PYTHONPATH=$(CURDIR)

bench: install
	$(BENCH_ENV) $(PY) bench/run.py

bench-streaming: install
	$(BENCH_ENV) $(PY) bench/streaming.py

bench-hotpath: install
	$(BENCH_ENV) $(PY) bench/hotpath.py

# Where a request's CPU time goes in bare mitmproxy, the floor and the addon (py-spy, ~40 s).
bench-breakdown: install
	$(BENCH_ENV) $(PY) bench/breakdown.py

# The container image, built with podman here (deploy/image.sh: a local Python 3.13 base, the
# wheelhouse, deploy/Containerfile); prints its tag. `make wheels`: the wheelhouse only, for
# `docker build -t proxysigv4 -f deploy/Containerfile deploy/build` elsewhere.
image: install
	PY=$(PY) deploy/image.sh

wheels: install
	PY=$(PY) deploy/image.sh wheels
