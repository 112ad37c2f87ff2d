"""The Node.js bot example (examples/node) against the real processes: `python -m standin`, the
projector and `python -m api` on loopback ports, with Node 20; and its TypeScript types, generated
from the API's OpenAPI with openapi-typescript, match the committed ones and type-check the example.

Needs `make node-example` (npm ci in examples/node); CI runs it, a dev machine without Node skips."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .apiserver import KEY, Server
from .net import free_port
from .test_worker_process import caught_up, output, spawn  # noqa: F401
from .waits import wait_for

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "node"
BIN = EXAMPLE / "node_modules" / ".bin"


@pytest.fixture(scope="module", autouse=True)
def _node_example_installed():
    missing = shutil.which("node") is None or not (EXAMPLE / "node_modules" / "mongodb").is_dir()
    if missing:
        if os.environ.get("CI"):
            pytest.fail("the Node example is not installed in CI: `make test` runs `make node-example`")
        pytest.skip("Node.js or examples/node/node_modules missing (make node-example)")
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout
    assert int(version.lstrip("v").split(".")[0]) >= 20, version


@pytest.fixture
def standin_process(tmp_path):
    """`python -m standin` on a free port; its URL."""
    log = open(tmp_path / "standin.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "standin", "--port", str(free_port())], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def url() -> str | None:
        log.seek(0)
        found = re.search(r"serving (mongodb://\S+)", log.read())
        return found.group(1) if found else None

    try:
        wait_for(lambda: url() is not None or proc.poll() is not None, 15, "the stand-in to start")
        assert proc.poll() is None, url()
        yield url()
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture
def api(prefix, store_env):
    server = Server(prefix, env=dict(store_env)).start()
    yield server
    server.stop()


def test_the_bot_example_runs_against_the_real_api_projector_and_standin(standin_process, spawn, api, store_env):
    projector = spawn("--mongo-url", standin_process)
    wait_for(lambda: httpx.get(api.url + "/readyz", timeout=2).status_code == 200, 30,
             "the projector's first heartbeat")
    env = {**os.environ, "LIVESTATUS_URL": api.url, "LIVESTATUS_KEY": KEY, "MONGO_URL": standin_process,
           "NODE_NO_WARNINGS": "1"}
    result = subprocess.run(["node", "--test", "--test-reporter=spec", "test/example.test.js"], cwd=EXAMPLE, env=env,
                            capture_output=True, text=True, timeout=240)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report + "\n--- projector log ---\n" + output(projector)
    assert re.search(r"ℹ pass 7\b", report) and re.search(r"ℹ fail 0\b", report), report


def test_types_generated_from_the_openapi_match_and_type_check_the_example(api, tmp_path):
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(httpx.get(api.url + "/openapi.json", timeout=5).json()))
    generated = tmp_path / "livestatus.d.ts"
    subprocess.run([str(BIN / "openapi-typescript"), str(schema), "-o", str(generated)], cwd=EXAMPLE,
                   capture_output=True, text=True, timeout=120, check=True)
    committed = EXAMPLE / "types" / "livestatus.d.ts"
    assert generated.read_text() == committed.read_text(), (
        "examples/node/types/livestatus.d.ts is stale: regenerate it with `make node-types`")
    result = subprocess.run([str(BIN / "tsc"), "-p", "."], cwd=EXAMPLE, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
