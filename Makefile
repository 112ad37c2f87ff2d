# One command per verb. `make demo` runs the product; `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test soak bench redis chromium clean

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

demo: install
	$(BIN)/python -m demo

test: install redis chromium
	$(BIN)/pytest

# The reliability suite at soak sizes (20 kill -9 over 50k events, 100k fuzzed documents, ...).
soak: install redis
	SOAK=1 $(BIN)/pytest tests/reliability -m soak

bench: install redis
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis
