# One command per verb. `make demo` runs the product; `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test soak bench redis chromium sse-clients clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,demo]'
	@touch $@

redis:
	@bash scripts/ensure-redis

chromium:
	@bash scripts/ensure-chromium

# Node's eventsource package, for the tests that read the stream with third-party clients.
sse-clients: tests/node/node_modules/.package-lock.json

tests/node/node_modules/.package-lock.json: tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund

demo: install
	$(BIN)/python -m demo

test: install redis chromium sse-clients
	$(BIN)/pytest

# The reliability suite at soak sizes (20 kill -9 over 50k events, 100k fuzzed documents, ...).
soak: install redis
	SOAK=1 $(BIN)/pytest tests/reliability -m soak

bench: install redis
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis tests/node/node_modules
