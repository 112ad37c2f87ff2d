# One command per verb. `make demo` runs the product; `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install lint demo test test-pymongo test-mongo test-clock soak soak-suite bench fuzz redis chromium faketime promtool sse-clients node-example node-types clean

install: $(VENV)/.installed

# Exactly the locked versions (hash-checked), then this checkout as an editable package; the
# checkout itself goes on the venv's path for what is not in the wheel (standin, demo, bench, tests).
$(VENV)/.installed: pyproject.toml requirements-dev.lock
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/pip install -q --no-deps -e .
	echo "$(CURDIR)" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/livestatus-checkout.pth"
	@touch $@

# Re-resolve the lock files after a change to the dependencies in pyproject.toml (newest releases
# that satisfy them; `make lock UPGRADE=--upgrade` moves every pin to the newest).
.PHONY: lock
lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --generate-hashes --universal --python-version 3.11 \
		-q $(UPGRADE) -o requirements-dev.lock
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 \
		-c requirements-dev.lock -q -o requirements.lock

redis:
	@bash scripts/ensure-redis

chromium:
	@bash scripts/ensure-chromium

faketime:
	@bash scripts/ensure-faketime

promtool:
	@bash scripts/ensure-promtool

# Node's eventsource package, for the tests that read the stream with third-party clients.
sse-clients: tests/node/node_modules/.package-lock.json

tests/node/node_modules/.package-lock.json: tests/node/package-lock.json
	npm ci --prefix tests/node --no-audit --no-fund

# The Node.js bot example (examples/node): tests/test_node_example.py runs it against the real processes.
node-example: examples/node/node_modules/.package-lock.json

examples/node/node_modules/.package-lock.json: examples/node/package-lock.json
	npm ci --prefix examples/node --no-audit --no-fund

# The example's TypeScript types from the app's OpenAPI (git-ignored; for an editor or `npm run check`).
node-types: install node-example
	$(BIN)/python scripts/node-types

# ruff (rules in pyproject.toml) and mypy (strict on readmodel/); CI runs it before the tests.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

demo: install
	$(BIN)/python -m demo

# TEST_JOBS=N spreads the tests over N pytest processes (pytest-xdist), each test file whole in one
# of them (its module-scoped servers start once; the session's Redis Cluster once per process):
# most of the suite waits on servers and subprocesses, not on the CPU. Three on these two cores:
# 8.6 min against 14-15 serially (620 s of CPU either way); TEST_JOBS=0 runs it in one process.
TEST_JOBS ?= 3
test: install redis chromium promtool sse-clients node-example
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadfile
	$(BIN)/python scripts/pymongo-spec

# pymongo's own change-stream tests (its sdist, fetched once into .cache/) against a stand-in
# process, unmodified; tests/pymongo_spec/skips.txt lists what is skipped and why (~30 s).
test-pymongo: install
	$(BIN)/python scripts/pymongo-spec

# The capture tests and the reliability suite against compose's MongoDB instead of the stand-in
# (needs Docker; MONGO_TEST_URL=mongodb://... pytest does the same against any test replica set).
test-mongo: install redis
	bash scripts/test-mongo

# The whole suite again with the process clock (and every process it starts) moved 40 days and 3
# years ahead, the two runs side by side, CLOCK_JOBS (2) processes each: no test may depend on the
# day it was written (scripts/test-clock says how; the browser test is left out: chromium does not
# start under faketime).
test-clock: install redis faketime sse-clients
	bash scripts/test-clock

# The whole pipeline under steady load (300 writes/s, 1,000 SSE clients, polling bots, kill -9 of the
# projector and API restarts) for SOAK_SECONDS (one hour), a table row per ten minutes, then a
# slope check (tests/reliability/soak). SOAK_ARGS passes more options (--help lists them).
SOAK_SECONDS ?= 3600
soak: install
	$(BIN)/python -m tests.reliability.soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

# The reliability suite at soak sizes (20 kill -9 over 50k events, 100k fuzzed documents, ...).
soak-suite: install redis
	SOAK=1 $(BIN)/pytest tests/reliability -m soak

# The long coverage-guided fuzz run (atheris) over documents and change events; the corpus grows in
# .fuzz-corpus/ and a crash is written to .fuzz-corpus/crash-* with the input that caused it.
FUZZ_SECONDS ?= 600
fuzz: install
	$(BIN)/python -m fuzz.documents -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -artifact_prefix=.fuzz-corpus/

bench: install redis
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis tests/node/node_modules examples/node/node_modules
