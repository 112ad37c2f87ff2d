"""Several API processes behind a load balancer serve the same users: versions come from Redis,
so a stream resumed on another process is exact, and every process pushes every change."""

import asyncio
import json
import os
import uuid
from dataclasses import dataclass, field

import httpx
import pytest
import redis

from readmodel import Layout, ReadModel, View, read_snapshots

from .apiserver import KEY, SSE, Server, apply, auth, balance_change, task_change
from .conftest import REDIS_URL, delete_prefix
from .roundrobin import RoundRobin


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


# ---------------------------------------------------------------------------- failover (#23)

FAILOVER_STREAMS = int(os.environ.get("FAILOVER_STREAMS", "1000"))  # a bigger run: FAILOVER_STREAMS=5000
WRITE_ROUNDS, KILL_AFTER_ROUND = 6, 2
RETRY_S = 0.2


@dataclass
class Panel:
    """One panel's EventSource, as a browser runs it: reconnect after ``retry``, sending the last
    ``id:`` it saw as Last-Event-ID."""

    uid: str
    last_id: str | None = None
    versions: list[int] = field(default_factory=list)
    connections: int = 0
    resumes: list[tuple[str, int | None]] = field(default_factory=list)  # (Last-Event-ID sent, resumedFrom)
    refused: dict[int, int] = field(default_factory=dict)

    async def run(self, port: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            writer = None
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
                sent = self.last_id
                resume = f"Last-Event-ID: {sent}\r\n" if sent is not None else ""
                writer.write(f"GET /users/{self.uid}/status/stream HTTP/1.1\r\nHost: x\r\n"
                             f"Authorization: Bearer {KEY}\r\n{resume}\r\n".encode())
                status = int((await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)[1])
                if status != 200:
                    self.refused[status] = self.refused.get(status, 0) + 1
                else:
                    self.connections += 1
                    await self._read(reader, sent)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                pass
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(RETRY_S)

    async def _read(self, reader: asyncio.StreamReader, sent: str | None) -> None:
        buffer = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return
            *events, buffer = (buffer + chunk[:-2]).replace(b"\r\n", b"\n").split(b"\n\n")
            for event in events:
                fields = dict(line.split(b": ", 1) for line in event.split(b"\n") if b": " in line)
                if b"id" in fields:
                    self.last_id = fields[b"id"].decode()
                    self.versions.append(int(self.last_id))
                if fields.get(b"event") == b"sync" and sent is not None:
                    self.resumes.append((sent, json.loads(fields[b"data"])["resumedFrom"]))


async def _poll_rest(port: int, users: list[str], stop: asyncio.Event, statuses: dict, cut: list) -> None:
    """A bot polling GET /status through the balancer, a new connection each time."""
    n = 0
    while not stop.is_set():
        uid = users[n % len(users)]
        n += 1
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(f"GET /users/{uid}/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                             "Connection: close\r\n\r\n".encode())
                status = int((await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)[1])
                statuses[status] = statuses.get(status, 0) + 1
            finally:
                writer.close()
        except (OSError, asyncio.IncompleteReadError):
            cut.append(uid)  # the request was in flight on the process that was killed
        await asyncio.sleep(0.02)


async def _until(done, timeout_s: float, state) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {state()}")
        await asyncio.sleep(0.05)


@pytest.mark.timeout(300)
async def test_a_process_killed_mid_burst_its_panels_resume_on_the_other_and_end_on_the_final_version():
    """Two API processes behind a round-robin balancer, FAILOVER_STREAMS panels; one process gets
    SIGKILL in the middle of a burst of writes. Every panel reconnects through the survivor with
    Last-Event-ID, the survivor honours it, versions never go back, and every panel ends on its
    user's final version; REST answers are only ever 200 or 503."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    env = {"STREAMS_PER_SERVICE_KEY": str(4 * FAILOVER_STREAMS), "STREAMS_PER_PROCESS": str(4 * FAILOVER_STREAMS),
           "SSE_RETRY_MS": str(int(RETRY_S * 1000)), "SSE_HEARTBEAT_S": "5"}
    servers = [Server(prefix, env=env).start(), Server(prefix, env=env).start()]
    balancer = RoundRobin([server.port for server in servers])
    client = redis.Redis.from_url(REDIS_URL)
    model = ReadModel(client, Layout(prefix))
    users = [f"fo:{i}" for i in range(FAILOVER_STREAMS)]
    panels = [Panel(uid) for uid in users]
    stop, stop_rest = asyncio.Event(), asyncio.Event()
    statuses: dict[int, int] = {}
    cut: list[str] = []
    tasks = [asyncio.create_task(panel.run(balancer.port, stop)) for panel in panels]
    pollers = [asyncio.create_task(_poll_rest(balancer.port, users, stop_rest, statuses, cut)) for _ in range(4)]
    try:
        await _until(lambda: all(panel.versions for panel in panels), 120,
                     lambda: f"{sum(bool(p.versions) for p in panels)} of {len(panels)} panels opened")
        for n in range(1, WRITE_ROUNDS + 1):
            await asyncio.to_thread(apply, model, *(balance_change(uid, f"{n}.000000", n, n) for uid in users))
            if n == KILL_AFTER_ROUND:
                servers[0].proc.kill()  # SIGKILL: no goodbye to any stream, in the middle of the burst
        final = {uid: snap["version"] for uid, snap in zip(users, read_snapshots(client, Layout(prefix), users, View(0)))}
        assert set(final.values()) == {WRITE_ROUNDS}
        behind = lambda: [p for p in panels if not p.versions or p.versions[-1] != final[p.uid]]  # noqa: E731
        await _until(lambda: not behind(), 120,
                     lambda: f"{len(behind())} panels not on the final version, e.g. {behind()[:2]}")
    finally:
        stop.set()
        stop_rest.set()
        for task in (*tasks, *pollers):
            task.cancel()
        await asyncio.gather(*tasks, *pollers, return_exceptions=True)
        balancer.stop()
        for server in servers:
            server.stop()
        delete_prefix(client, prefix)
        client.close()
    moved = [panel for panel in panels if panel.connections > 1]
    print(f"failover: {len(moved)} of {len(panels)} panels resumed on the survivor; REST {statuses}; "
          f"{len(cut)} REST requests cut by the kill")
    assert FAILOVER_STREAMS // 4 < len(moved) < FAILOVER_STREAMS  # about half were on the killed process
    for panel in moved:
        # Each reconnect sent the last id seen and the survivor resumed from exactly that.
        assert panel.resumes and all(sent is not None and int(sent) == resumed for sent, resumed in panel.resumes), panel
    for panel in panels:
        assert panel.versions == sorted(panel.versions), panel  # never back to an older state
        assert not panel.refused, panel
    assert set(statuses) <= {200, 503} and statuses.get(200, 0) > 0, statuses
    assert len(cut) <= len(pollers), cut  # only requests in flight on the killed process lost their answer
