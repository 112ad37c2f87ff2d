"""Shared fixtures: a real local Redis (isolated by a key prefix per test) and fakeredis."""

from __future__ import annotations

import logging
import os
import uuid

import fakeredis
import pytest
import redis
from hypothesis import settings

from readmodel import Layout, ReadModel
from readmodel.connect import connect
from readmodel.settings import store_settings

from .procs import spawn  # noqa: F401  (a fixture: `python -m projector` processes for any test)

# No wall-clock deadline per Hypothesis example: speed is the benchmarks' business (bench/), and a
# 200 ms deadline fails under load (test_normalize's first explicit example took 202 ms at load 11).
settings.register_profile("livestatus", deadline=None)
settings.load_profile("livestatus")

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """A command run in-process (tests/test_cli.py) points the root logger at the stderr pytest
    captures for the test's call; put the root's handlers and level back when the call ends, so
    what its teardown logs (or a later test's) is not a "Logging error" about a closed file."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key under ``prefix`` (what a test wrote), never anything else."""
    keys = list(client.scan_iter(match=Layout(prefix).all_keys_pattern(), count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests can share one Redis and run in parallel."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def layout(prefix: str) -> Layout:
    return Layout(prefix)


@pytest.fixture(scope="session")
def redis_cluster():
    """A real six-node Redis Cluster on loopback (three masters, one replica each), for the session."""
    from devkit.rediscluster import LocalCluster

    with LocalCluster() as cluster:
        yield cluster


BACKENDS = ["single", "cluster"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_backends: real-Redis tests run on a single Redis and on a Redis Cluster")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``both_backends`` (``pytestmark = pytest.mark.both_backends`` for a module)
    that uses the real Redis runs once per backend, grouped by backend within the module."""
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_backends"):
        metafunc.parametrize("backend", BACKENDS, indirect=True, scope="module")


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    """Which Redis the real-Redis fixtures use: a single Redis, or each of BACKENDS in a module
    marked ``both_backends``."""
    return getattr(request, "param", "single")


@pytest.fixture(scope="module")
def store_env(backend: str, request) -> dict[str, str]:
    """``REDIS_URL`` and ``REDIS_CLUSTER`` of the backend (for settings and child processes)."""
    if backend == "cluster":
        return request.getfixturevalue("redis_cluster").env
    return {"REDIS_URL": REDIS_URL, "REDIS_CLUSTER": "0"}


def store_client(env: dict[str, str]):
    """A sync client of the backend ``env`` names, made as the projector makes its own."""
    return connect(store_settings(env))


@pytest.fixture
def real_redis(prefix: str, store_env: dict[str, str]):
    """The real local Redis (or cluster); every key under this test's prefix is deleted afterwards."""
    client = store_client(store_env)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"no Redis answers at {store_env['REDIS_URL']}: start one (see README)")
    yield client
    delete_prefix(client, prefix)
    client.close()


@pytest.fixture
def fake_redis():
    client = fakeredis.FakeRedis()
    yield client
    client.close()


@pytest.fixture
def make_worker(standin, real_redis, prefix, backend):
    """Workers on the stand-in and the test's Redis (either backend), closed afterwards."""
    from pymongo import MongoClient

    from projector.normalize import Rules
    from projector.settings import Settings
    from projector.worker import Worker
    from readmodel import Partition
    from readmodel.settings import StoreSettings

    made = []

    def make(batch_size=1000, rules=None, holder=None, partition=None, **kwargs):
        settings = Settings(store=StoreSettings(key_prefix=prefix, cluster=backend == "cluster"), mongo_url=standin.url,
                            batch_size=batch_size, rules=rules or Rules(), partition=partition or Partition())
        mongo = MongoClient(standin.url, serverSelectionTimeoutMS=3000)
        worker = Worker(settings, real_redis, mongo, holder=holder, progress=False, **kwargs)
        made.append((worker, mongo))
        return worker

    yield make
    for worker, mongo in made:
        worker.close()
        mongo.close()


@pytest.fixture
def standin():
    """A MongoDB stand-in (a single-node replica set on a loopback port), stopped afterwards; or
    the replica set MONGO_TEST_URL names (tests/mongo_target.py)."""
    from .mongo_target import mongo_target

    with mongo_target() as server:
        yield server


@pytest.fixture(scope="module")
def module_prefix() -> str:
    """A key prefix shared by one module's tests (for a server that the module shares)."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def server(module_prefix, store_env):
    """``python -m api`` on a loopback port, shared by the module; its keys deleted afterwards."""
    from .apiserver import Server

    api = Server(module_prefix, env=dict(store_env)).start()
    yield api
    api.stop()
    client = store_client(store_env)
    delete_prefix(client, module_prefix)
    client.close()


@pytest.fixture(scope="module")
def readmodel(module_prefix, store_env):
    """A ReadModel writing under the module's prefix into the real Redis (or cluster)."""
    client = store_client(store_env)
    yield ReadModel(client, Layout(module_prefix))
    client.close()


@pytest.fixture(params=["fake", "real"])
def any_redis(request, prefix):
    """The same scenario against fakeredis and the real Redis."""
    return request.getfixturevalue("fake_redis" if request.param == "fake" else "real_redis")
