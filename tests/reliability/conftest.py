"""Reliability suite: fault-injection tests that run short in `make test` and long with SOAK=1.

Every test here is marked ``soak``; ``SOAK=1 pytest tests/reliability -m soak`` runs the same code
with the soak sizes (``size(short, soak)``) and longer timeouts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devkit.rediscluster import LocalCluster
from devkit.scratchredis import PrivateRedis

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
            # A hang guard above the tests' own waits (each bounded, some 120 s): the suite's 120 s
            # per test is too close for them under load. The cluster failover took 22 s at the real
            # date, 38 s under libfaketime alone, over 120 s with the two clock runs side by side.
            item.add_marker(pytest.mark.timeout(3600 if SOAK else 300))


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path).start()
    yield server
    server.kill()


@pytest.fixture
def cluster():
    """A Redis Cluster of this test's own, for a test that loses masters (a module that uses it
    overrides ``store_env`` with its ``env``)."""
    with LocalCluster() as local:
        yield local
