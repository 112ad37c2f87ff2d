"""Freshness through the real processes (stand-in, `projector run`, `python -m api`): every
snapshot says which source position it reflects, and a read naming the cluster time of the
caller's own write (MongoDB's operationTime) is answered once the projection shows that write, or
with 504 projection_behind after FRESH_WAIT_S.

The cluster time a write returns as ``operationTime`` is at or after the write's own oplog entry
(mongodb/mongo: jstests/replsets/operation_time_read_and_write_concern.js checks that a write's
operationTime is its optime), and a change event carries that entry's time as ``clusterTime``."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest
from pymongo import MongoClient

from devkit.waits import wait_for
from readmodel import position

from .apiserver import SSE, Server, auth
from .capture_helpers import DB, TASKS, task_doc


@pytest.fixture
def projectors(spawn):
    """Start `projector run` processes against the stand-in at a URL (the process tests' spawner:
    each one still alive at the end is killed)."""
    return lambda mongo_url, *args: spawn("--mongo-url", mongo_url, *args)


@pytest.fixture
def api(prefix, store_env):
    servers: list[Server] = []

    def start(**env: str) -> Server:
        server = Server(prefix, env={**store_env, **env}).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def write_task(client: MongoClient, doc: dict) -> str:
    """Insert through the driver; the session's operationTime as seconds.increment."""
    with client.start_session() as session:
        client[DB][TASKS].insert_one(doc, session=session)
        stamp = session.operation_time
    return f"{stamp.time}.{stamp.inc}"


def update_progress(client: MongoClient, gid: str, progress: float) -> str:
    with client.start_session() as session:
        client[DB][TASKS].update_one({"_id": gid}, {"$set": {"progress": progress}}, session=session)
        stamp = session.operation_time
    return f"{stamp.time}.{stamp.inc}"


def status(server: Server, uid: str, **params: str) -> httpx.Response:
    return httpx.get(f"{server.url}/users/{uid}/status", params=params, headers=auth(), timeout=30)


def as_position(cluster_time: str) -> str:
    seconds, increment = cluster_time.split(".")
    return position(int(seconds), int(increment))


def applied_at(snap: dict) -> float:
    return datetime.fromisoformat(snap["source"]["appliedAt"]).timestamp()


def source_ready(server: Server, uid: str) -> bool:
    return status(server, uid).json()["source"]["position"] is not None


def test_a_read_after_my_write_shows_the_write_and_says_what_it_reflects(standin, projectors, api):
    client = MongoClient(standin.url, directConnection=True)
    projectors(standin.url)
    server = api()
    wait_for(lambda: source_ready(server, "fresh1"), 20, "the projector's first checkpoint")
    for round_ in range(3):  # each read right after its write, no sleep in between
        written = write_task(client, task_doc(f"g{round_}", "fresh1", progress=0.1 * (round_ + 1)))
        reply = status(server, "fresh1", afterClusterTime=written)
        assert reply.status_code == 200, reply.text
        snap = reply.json()
        assert f"g{round_}" in {t["generationId"] for t in snap["liveTasks"]}
        assert snap["source"]["position"] >= as_position(written)
        assert snap["source"]["lagMs"] >= 0
        assert abs(time.time() - applied_at(snap)) < 30  # the projector checkpoints every second
        assert [p["partition"] for p in snap["source"]["partitions"]] == ["0/1"]
    written = update_progress(client, "g0", 0.73)
    task = {t["generationId"]: t for t in status(server, "fresh1", afterClusterTime=as_position(written)).json()["liveTasks"]}
    assert task["g0"]["progressPercent"] == 73.0  # the position format is accepted too
    # The text form and the SSE snapshot say it as well.
    text = httpx.get(f"{server.url}/users/fresh1/status/text", params={"platform": "telegram", "afterClusterTime": written},
                     headers=auth(), timeout=30).json()
    assert text["source"]["position"] >= as_position(written) and "73%" in text["text"]
    with httpx.stream("GET", f"{server.url}/users/fresh1/status/stream", headers=auth(), timeout=30) as response:
        first = SSE(response).snapshot(10).json()
    assert first["source"]["position"] >= as_position(written)
    client.close()


def test_a_projection_that_cannot_catch_up_answers_504_projection_behind_after_the_wait(standin, projectors, api):
    client = MongoClient(standin.url, directConnection=True)
    projector = projectors(standin.url)
    server = api(FRESH_WAIT_S="0.5")
    wait_for(lambda: source_ready(server, "fresh2"), 20, "the projector's first checkpoint")
    projector.kill()
    projector.wait()
    stopped = applied_at(status(server, "fresh2").json())
    # A stopped projector shows: its last checkpoint's time stays where it was.
    wait_for(lambda: time.time() - applied_at(status(server, "fresh2").json()) > 2, 20, "the checkpoint ageing")
    assert applied_at(status(server, "fresh2").json()) == stopped
    written = write_task(client, task_doc("late", "fresh2"))
    started = time.monotonic()
    reply = status(server, "fresh2", afterClusterTime=written)
    assert reply.status_code == 504
    assert reply.json()["error"]["code"] == "projection_behind"
    assert "not yet through" in reply.json()["error"]["message"]
    assert time.monotonic() - started >= 0.45  # it waited FRESH_WAIT_S first
    assert status(server, "fresh2").status_code == 200  # without the condition: the snapshot as it is
    projectors(standin.url)  # back: the same read is answered
    wait_for(lambda: status(server, "fresh2", afterClusterTime=written).status_code == 200, 20, "the catch-up")
    client.close()


def test_with_partitions_a_read_waits_for_every_partition_and_lists_each(standin, projectors, api):
    client = MongoClient(standin.url, directConnection=True)
    projectors(standin.url, "--partition", "0/2")
    second = projectors(standin.url, "--partition", "1/2")
    server = api(PROJECTOR_PARTITIONS="2", FRESH_WAIT_S="0.5")
    wait_for(lambda: source_ready(server, "fresh3"), 30, "both partitions' first checkpoints")
    written = [write_task(client, task_doc(f"p{i}", "fresh3")) for i in range(6)]  # both partitions own some
    snap = status(server, "fresh3", afterClusterTime=written[-1]).json()
    assert {t["generationId"] for t in snap["liveTasks"]} == {f"p{i}" for i in range(6)}
    assert [p["partition"] for p in snap["source"]["partitions"]] == ["0/2", "1/2"]
    assert all(p["position"] >= as_position(written[-1]) for p in snap["source"]["partitions"])
    second.kill()
    second.wait()
    late = write_task(client, task_doc("p-late", "fresh3"))
    reply = status(server, "fresh3", afterClusterTime=late)
    assert reply.status_code == 504 and reply.json()["error"]["code"] == "projection_behind"
    client.close()


BAD_CLUSTER_TIMES = ["abc", "1.2.3", "1795597328", "-1.2", "1e5.0", "99999999999.1", "1.4294967296", "１.２", " ",
                     "1.2;drop"]


def test_a_malformed_cluster_time_is_a_400_in_the_one_error_shape(api):
    server = api()
    for bad in BAD_CLUSTER_TIMES:
        reply = status(server, "fresh4", afterClusterTime=bad)
        assert reply.status_code == 400, bad
        assert reply.json()["error"]["code"] == "invalid_request"
        assert "afterClusterTime" in reply.json()["error"]["message"]
