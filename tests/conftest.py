"""Shared fixtures: a real local Redis (isolated by a key prefix per test) and fakeredis."""

from __future__ import annotations

import os
import uuid

import fakeredis
import pytest
import redis

from readmodel import Layout, ReadModel

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


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


@pytest.fixture
def real_redis(prefix: str):
    """The real local Redis; every key under this test's prefix is deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail(f"no Redis answers at {REDIS_URL}: start one (see README)")
    yield client
    delete_prefix(client, prefix)
    client.close()


@pytest.fixture
def fake_redis():
    client = fakeredis.FakeRedis()
    yield client
    client.close()


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
def server(module_prefix):
    """``python -m api`` on a loopback port, shared by the module; its keys deleted afterwards."""
    from .apiserver import Server

    api = Server(module_prefix).start()
    yield api
    api.stop()
    client = redis.Redis.from_url(REDIS_URL)
    delete_prefix(client, module_prefix)
    client.close()


@pytest.fixture(scope="module")
def readmodel(module_prefix):
    """A ReadModel writing under the module's prefix into the real Redis."""
    client = redis.Redis.from_url(REDIS_URL)
    yield ReadModel(client, Layout(module_prefix))
    client.close()


@pytest.fixture(params=["fake", "real"])
def any_redis(request, prefix):
    """The same scenario against fakeredis and the real Redis."""
    return request.getfixturevalue("fake_redis" if request.param == "fake" else "real_redis")
