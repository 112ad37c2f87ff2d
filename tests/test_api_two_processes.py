"""Several API processes behind a load balancer serve the same users: versions come from Redis,
so a stream resumed on another process is exact, and every process pushes every change."""

import uuid

import httpx
import pytest
import redis

from readmodel import Layout, ReadModel

from .apiserver import SSE, Server, apply, auth, balance_change, task_change
from .conftest import REDIS_URL, delete_prefix


@pytest.fixture(scope="module")
def servers():
    prefix = f"t{uuid.uuid4().hex[:10]}"
    pair = [Server(prefix).start(), Server(prefix).start()]
    yield pair
    for server in pair:
        server.stop()
    client = redis.Redis.from_url(REDIS_URL)
    delete_prefix(client, prefix)
    client.close()


@pytest.fixture(scope="module")
def readmodel(servers):
    client = redis.Redis.from_url(REDIS_URL)
    yield ReadModel(client, Layout(servers[0].prefix))
    client.close()


def stream(server, user, **headers):
    return httpx.stream("GET", f"{server.url}/users/{user}/status/stream", headers={**auth(), **headers}, timeout=5)


def test_both_processes_push_the_same_change_to_their_own_clients(servers, readmodel):
    user = f"u:{uuid.uuid4().hex[:8]}"
    with stream(servers[0], user) as first, stream(servers[1], user) as second:
        a, b = SSE(first), SSE(second)
        assert a.snapshot().id == b.snapshot().id == "0"
        apply(readmodel, task_change(user, "g1"))
        pushed_a, pushed_b = a.snapshot(), b.snapshot()
        assert pushed_a.id == pushed_b.id == "1"
        assert pushed_a.json() == pushed_b.json()
        assert [t["generationId"] for t in pushed_b.json()["liveTasks"]] == ["g1"]


def test_a_stream_resumed_on_the_other_process_catches_up_exactly(servers, readmodel):
    user = f"u:{uuid.uuid4().hex[:8]}"
    apply(readmodel, balance_change(user, "1", 2702, 0))
    with stream(servers[0], user) as first:
        seen = SSE(first).snapshot()
    assert seen.id == "1"
    apply(readmodel, balance_change(user, "2", 5405, 0))  # missed while reconnecting
    with stream(servers[1], user, **{"Last-Event-ID": seen.id}) as second:
        caught_up = SSE(second).snapshot()
    assert caught_up.id == "2" and caught_up.json()["balance"]["usdCredit"] == "2"
