"""kill -9 of a Redis Cluster master while the projector applies a stream of changes and 100 SSE
clients listen: everything recovers by itself, nothing is lost or invented, nobody sees a 500."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter

import httpx
import pytest

from devkit.rediscluster import LocalCluster
from devkit.waits import wait_for
from readmodel import Layout
from tests.apiserver import Server, auth
from tests.procs import caught_up, output
from tests.writers import MixedWriter

from .conftest import size
from .helpers import compare

RUN = ("--batch-size", "50", "--lease-ttl-ms", "3000", "--no-progress")
CLIENTS = 100


@pytest.fixture
def store_env(cluster) -> dict[str, str]:
    """The processes' Redis is this test's own cluster (conftest's ``cluster``: it loses a master)."""
    return cluster.env


class Listeners:
    """``CLIENTS`` EventSource-like clients in one thread: each reconnects with Last-Event-ID after
    any end or error and keeps the last snapshot it received; every HTTP status is counted."""

    def __init__(self, url: str, users: list[str]) -> None:
        self.url = url
        self.users = [users[i % len(users)] for i in range(CLIENTS)]
        self.last: list[tuple[int, dict] | None] = [None] * CLIENTS
        self.statuses: Counter[int] = Counter()
        self.reconnects = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=CLIENTS + 10)
        async with httpx.AsyncClient(timeout=httpx.Timeout(5, read=2), limits=limits) as client:
            await asyncio.gather(*(self._one(client, i) for i in range(CLIENTS)))

    async def _one(self, client: httpx.AsyncClient, i: int) -> None:
        while not self.stop.is_set():
            headers = auth()
            if self.last[i] is not None:
                headers["Last-Event-ID"] = str(self.last[i][0])
            try:
                async with client.stream("GET", f"{self.url}/users/{self.users[i]}/status/stream",
                                         headers=headers) as response:
                    self.statuses[response.status_code] += 1
                    if response.status_code != 200:
                        await asyncio.sleep(0.2)
                        continue
                    event, ident = None, None
                    async for line in response.aiter_lines():
                        if line.startswith("event: "):
                            event = line[7:]
                        elif line.startswith("id: "):
                            ident = int(line[4:])
                        elif line.startswith("data: ") and event == "snapshot":
                            self.last[i] = (ident, json.loads(line[6:]))
                        elif line == "":
                            event, ident = None, None
                        if self.stop.is_set():
                            return
            except httpx.HTTPError:
                pass
            self.reconnects += 1
            await asyncio.sleep(0.1)


def poll_rest(url: str, users: list[str], stop: threading.Event, statuses: Counter) -> None:
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            for uid in users:
                try:
                    statuses[client.get(f"{url}/users/{uid}/status", headers=auth()).status_code] += 1
                except httpx.HTTPError as exc:
                    statuses[f"transport:{type(exc).__name__}"] += 1
            time.sleep(0.02)


def test_a_master_killed_mid_stream_loses_nothing_and_every_client_ends_on_the_final_state(
    standin, spawn, real_redis, layout: Layout, prefix: str, cluster: LocalCluster
):
    events = size(3_000, 30_000)
    seed = random.randrange(1 << 30)
    print(f"seed={seed} events={events}")
    writer = MixedWriter(standin, seed, limit=events, pause_s=0.003)
    writer.seed()
    projector = spawn("--mongo-url", standin.url, *RUN)
    api = Server(prefix, env=dict(cluster.env)).start()
    users = MixedWriter.USERS
    listeners = Listeners(api.url, users)
    rest_statuses: Counter = Counter()
    polling = threading.Event()
    poller = threading.Thread(target=poll_rest, args=(api.url, users, polling, rest_statuses), daemon=True)
    try:
        wait_for(lambda: caught_up(real_redis, layout, standin), 60, "the initial sync")
        listeners.thread.start()
        poller.start()
        writer.start()
        wait_for(lambda: writer.count >= events // 3, 120, "a third of the writes")
        # The master holding the projector's lease, fence and checkpoint: the harshest one to lose.
        victim = real_redis.get_node_from_key(layout.checkpoint).port
        masters_before = cluster.master_ports()
        cluster.kill9(victim)
        took = wait_for(lambda: victim not in cluster.master_ports() and len(cluster.master_ports()) == 3, 30,
                        "a replica taking over")
        cluster.wait_ok(30)
        print(f"killed master {victim} of {masters_before}; replica promoted after {took:.1f} s")
        writer.join(timeout=600)
        assert writer.count == events
        wait_for(lambda: caught_up(real_redis, layout, standin), 120, "the projector catching up")
        diff = compare(standin, real_redis, layout)
        assert diff.clean, str(diff)

        # Every SSE client ends on its user's final snapshot (same version, same content).
        def final(uid: str) -> dict:
            return httpx.get(f"{api.url}/users/{uid}/status", headers=auth(), timeout=5).json()

        finals = {uid: final(uid) for uid in users}

        def settled() -> bool:
            return all(last is not None and last[0] == finals[uid]["version"]
                       for uid, last in zip(listeners.users, listeners.last))

        try:
            wait_for(settled, 30, "every SSE client receiving its user's final snapshot")
        except AssertionError:
            behind = {(uid, last and last[0], finals[uid]["version"]) for uid, last in zip(listeners.users, listeners.last)
                      if last is None or last[0] != finals[uid]["version"]}
            api.stop()
            raise AssertionError(
                f"behind: {sorted(behind)}; SSE {dict(listeners.statuses)}; API log: {api.stderr[-4000:]}") from None
        for uid, (_version, data) in zip(listeners.users, listeners.last):
            want = finals[uid]
            assert data["balance"] == want["balance"], uid
            assert {t["generationId"]: t["status"] for t in data["liveTasks"]} == \
                   {t["generationId"]: t["status"] for t in want["liveTasks"]}, uid
    finally:
        listeners.stop.set()
        polling.set()
        writer.stop.set()
        writer.join()
        if poller.is_alive():
            poller.join(10)
        if listeners.thread.is_alive():
            listeners.thread.join(10)
        api.stop()
    log = output(projector)
    print(f"SSE statuses {dict(listeners.statuses)}, reconnects {listeners.reconnects}; REST {dict(rest_statuses)}")
    # The lost-write guard saw the failover and rebuilt from the documents.
    assert "the Redis masters changed" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert "Traceback" not in api.stderr, api.stderr[-3000:]
    assert set(listeners.statuses) <= {200, 503}, listeners.statuses
    assert set(rest_statuses) <= {200, 503}, rest_statuses
    assert rest_statuses[200] > 0 and listeners.statuses[200] >= CLIENTS
