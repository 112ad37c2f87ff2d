"""Reliability suite: fault-injection tests that run short in `make test` and long with SOAK=1.

Every test here is marked ``soak``; ``SOAK=1 pytest tests/reliability -m soak`` runs the same code
with the soak sizes (``size(short, soak)``) and longer timeouts.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import redis

from devkit.ports import free_port, real_clock_env

# The stand-in and the `projector run` spawner of the process tests, reused as they are.
from tests.test_worker_process import spawn  # noqa: F401

SOAK = os.environ.get("SOAK", "") not in ("", "0")
HERE = Path(__file__).resolve().parent


def size(short: int, soak: int) -> int:
    """The short size in CI, the soak size under SOAK=1."""
    return soak if SOAK else short


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: reliability test whose long version runs with SOAK=1 (make soak)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.soak)
            if SOAK:
                item.add_marker(pytest.mark.timeout(3600))


class PrivateRedis:
    """A redis-server of this test's own (no persistence), so it may be flushed and restarted."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=real_clock_env(),
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.kill()
        raise RuntimeError(f"the private redis-server on port {self.port} did not answer in 10 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path).start()
    yield server
    server.kill()
