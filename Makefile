# proxysigv4 — make demo | test | run | install | lint | bench (bench-streaming, bench-hotpath, bench-breakdown)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= proxysigv4.yaml
PORT ?= 8080

.PHONY: install test lint format run demo clean bench bench-streaming bench-hotpath bench-breakdown

install: $(STAMP)

# Pick the first interpreter >= 3.12 (mitmproxy 12 needs it); .python-version selects one on pyenv machines.
$(STAMP): setup.cfg pyproject.toml
	@py=""; for c in python3.13 python3.12 python3; do \
	  if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then py=$$c; break; fi; \
	done; \
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
	$(VENV)/bin/ruff check addon tests bench
	$(VENV)/bin/ruff format --check addon tests bench

format: install
	$(VENV)/bin/ruff format addon tests
	$(VENV)/bin/ruff check --fix addon tests

test: install $(NODE_STAMP) lint
	$(VENV)/bin/pytest -q -rs

run: install
	$(VENV)/bin/proxysigv4 run -c $(CONFIG) -p $(PORT)

demo: install
	$(VENV)/bin/proxysigv4 demo

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# Throughput against bare mitmproxy, the in-process hot path and 1 GiB streaming (< 3 min).
bench: install
	$(PY) bench/run.py

bench-streaming: install
	$(PY) bench/streaming.py

bench-hotpath: install
	$(PY) bench/hotpath.py

# Where a request's CPU time goes in bare mitmproxy, the floor and the addon (py-spy, ~40 s).
bench-breakdown: install
	$(PY) bench/breakdown.py
