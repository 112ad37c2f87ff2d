"""SSE clients that keep disconnecting and resuming with Last-Event-ID during live updates end on
the final version; a stalled client costs the server bounded memory. Real uvicorn, real Redis."""

from __future__ import annotations

import random
import socket
import threading
import time
import uuid

import httpx

from devkit.waits import wait_for
from readmodel import View, read_snapshot
from tests.apiserver import SSE, Server, apply, auth, task_change

from .conftest import size


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


class Client:
    """One panel that reconnects over and over, resuming from the last version it saw."""

    def __init__(self, server: Server, user: str, seed: int) -> None:
        self.server, self.user = server, user
        self.random = random.Random(seed)
        self.last: int | None = None
        self.cycles = 0
        self.problems: list[str] = []

    def cycle(self, extra_events: int) -> dict:
        """Connect (with Last-Event-ID once a version was seen), read to the sync event and maybe a
        few live snapshots, hang up; returns the sync event's data."""
        headers = {**auth(), **({"Last-Event-ID": str(self.last)} if self.last is not None else {})}
        with httpx.stream("GET", f"{self.server.url}/users/{self.user}/status/stream", headers=headers,
                          timeout=5) as response:
            assert response.status_code == 200, response.status_code
            sse = SSE(response)
            while True:
                event = sse.next()
                if event.event == "snapshot":
                    self.seen(int(event.id))
                else:
                    sync = event.json()
                    break
            for _ in range(extra_events):
                try:
                    self.seen(int(sse.snapshot(timeout_s=0.5).id))
                except TimeoutError:
                    break
        self.cycles += 1
        return sync

    def seen(self, version: int) -> None:
        if self.last is not None and version <= self.last:
            self.problems.append(f"{self.user}: version {version} after {self.last}")
        self.last = version

    def run(self, cycles: int) -> None:
        try:
            for _ in range(cycles):
                self.cycle(self.random.choice([0, 0, 1, 2]))
        except Exception as exc:
            self.problems.append(f"{self.user}: {type(exc).__name__}: {exc}")


def test_reconnect_cycles_with_last_event_id_end_on_the_final_version(server, readmodel):
    cycles, clients_n = size(300, 10_000), 6
    users = [f"u:{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for uid in users:
        apply(readmodel, task_change(uid, f"gen-{uid}", progress=0.0))
    clients = [Client(server, users[i % len(users)], i) for i in range(clients_n)]
    stop, applied = threading.Event(), [0]
    per_user = dict.fromkeys(users, 1)

    def updater() -> None:
        rnd = random.Random(7)
        while not stop.is_set():
            uid = rnd.choice(users)
            applied[0] += 1
            per_user[uid] += 1
            apply(readmodel, task_change(uid, f"gen-{uid}", progress=float(applied[0] % 1000) / 10))
            time.sleep(0.005)

    threads = [threading.Thread(target=c.run, args=(cycles // clients_n,), daemon=True) for c in clients]
    writer = threading.Thread(target=updater, daemon=True)
    writer.start()
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=1800)
    stop.set()
    writer.join(10)
    took = time.monotonic() - started
    final = {uid: read_snapshot(readmodel.redis, readmodel.layout, uid, View(int(time.time() * 1000)))["version"]
             for uid in users}
    # Every client comes back once more after the last change and must end on the final version.
    for client in clients:
        sync = client.cycle(0)
        assert sync["version"] == final[client.user], (sync, final[client.user])
    assert final == per_user  # one version per change (generation ids are per user: no moves)
    problems = [p for c in clients for p in c.problems]
    last_seen = {c.user: c.last for c in clients}
    print(f"{sum(c.cycles for c in clients)} cycles in {took:.1f} s with {applied[0]} updates; final {final}")
    assert problems == [], problems[:20]
    assert sum(c.cycles for c in clients) >= cycles
    assert all(c.last == final[c.user] for c in clients), (last_seen, final)
    assert all(t.is_alive() is False for t in threads)


def test_a_stalled_client_costs_bounded_server_memory(server, readmodel):
    """A client that reads nothing while ~100 KB snapshots change many times: the server keeps
    only the latest state for it (dropped-intermediate counter rises), and its RSS stays flat."""
    versions = size(300, 5_000)
    user = f"u:{uuid.uuid4().hex[:8]}"
    name = "T" * 1900
    apply(readmodel, *[task_change(user, f"gen-{i}", tool_name=name) for i in range(50)])
    with httpx.stream("GET", f"{server.url}/users/{user}/status/stream", headers=auth(), timeout=5) as response:
        SSE(response).snapshot()  # warm the server's buffers with one full snapshot
    dropped_before = server.metric("livestatus_api_dropped_states_total")
    rss_before = rss_kb(server.proc.pid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET /users/{user}/status/stream HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: {auth()['Authorization']}\r\n\r\n".encode())
    try:
        wait_for(lambda: server.metric("livestatus_api_open_streams") >= 1, 5, "the stalled stream opening")
        snapshot_bytes = len(str(read_snapshot(readmodel.redis, readmodel.layout, user, View(int(time.time() * 1000)))))
        peak = rss_before
        for n in range(1, versions + 1):
            apply(readmodel, task_change(user, "gen-0", progress=float(n % 100), tool_name=name))
            time.sleep(0.01)  # slow enough for the fan-out to read each version
            if n % 50 == 0:
                peak = max(peak, rss_kb(server.proc.pid))
        wait_for(lambda: server.metric("livestatus_api_dropped_states_total") > dropped_before, 10, "a dropped state")
        peak = max(peak, rss_kb(server.proc.pid))
        dropped = server.metric("livestatus_api_dropped_states_total") - dropped_before
    finally:
        sock.close()
    pushed_mb = versions * snapshot_bytes / 1e6
    growth_mb = (peak - rss_before) / 1024
    print(f"stalled client: {versions} versions x {snapshot_bytes / 1e3:.0f} KB = {pushed_mb:.0f} MB unread; "
          f"dropped {dropped:.0f}; server RSS {rss_before / 1024:.1f} MB -> peak {peak / 1024:.1f} MB (+{growth_mb:.1f} MB)")
    assert dropped >= versions // 2
    assert growth_mb < 16, f"server RSS grew {growth_mb:.1f} MB for one stalled client"
