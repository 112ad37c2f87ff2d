"""The stream read by SSE client libraries this project did not write, against a real API process.

Node's ``eventsource`` package (npm, run by the machine's Node.js; ``npm ci`` in tests/node) and
Python's ``httpx-sse``. Each gets the first snapshot and a pushed change; then the API process
is stopped mid-stream, a task finishes and the balance changes while it is down, and the API
comes back on the same port: the client reconnects with ``Last-Event-ID`` and ends on the final
version, the finished task's terminal status included. The browser's EventSource is tested in
Chromium (test_api_panel.py).

``eventsource`` reconnects by itself (the test only watches). ``httpx-sse`` parses the stream
but has no reconnect of its own: its client here is the loop its documentation suggests, taking
the delay from ``retry:`` and the id from the last event.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from tests.apiserver import KEY, Server, apply, auth, balance_change, task_change
from tests.conftest import REDIS_URL, delete_prefix

NODE_DIR = Path(__file__).parent / "node"


class Client:
    """What a client library reported, in order, as dicts: ``request`` (with the Last-Event-ID
    it sent), ``snapshot`` / ``sync`` (with ``id`` and parsed ``data``), ``error``."""

    def __init__(self) -> None:
        self.reports: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []

    def next(self, kind: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The next report of this kind (earlier reports of other kinds are kept in ``seen``)."""
        while True:
            try:
                report = self.reports.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(f"no {kind!r} within {timeout_s}s; seen: {self.seen[-8:]}") from None
            self.seen.append(report)
            if report["type"] == kind:
                return report

    def requests(self) -> list[dict[str, Any]]:
        return [r for r in self.seen if r["type"] == "request"]


class NodeEventSource(Client):
    def __init__(self, url: str) -> None:
        super().__init__()
        node = shutil.which("node")
        if node is None:
            pytest.fail("Node.js is not installed (the eventsource test needs it)")
        if not (NODE_DIR / "node_modules" / "eventsource").is_dir():
            pytest.fail("tests/node has no node_modules: run `npm ci --prefix tests/node` first")
        self.proc = subprocess.Popen([node, str(NODE_DIR / "sse_client.mjs"), url, KEY], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.reports.put(json.loads(line))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.proc.stdout.close()
        self.stderr = self.proc.stderr.read()
        self.proc.stderr.close()


class HttpxSse(Client):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_id, retry_ms = None, 3000
        with httpx.Client(timeout=httpx.Timeout(5, read=30)) as client:
            while not self.stop.is_set():
                headers = auth() | ({"Last-Event-ID": last_id} if last_id else {})
                self.reports.put({"type": "request", "lastEventId": last_id})
                try:
                    with connect_sse(client, "GET", self.url, headers=headers) as source:
                        for event in source.iter_sse():
                            if event.retry is not None:
                                retry_ms = event.retry
                            if event.event in ("snapshot", "sync"):
                                last_id = event.id or last_id
                                self.reports.put({"type": event.event, "id": event.id, "data": event.json()})
                except httpx.HTTPError as exc:
                    self.reports.put({"type": "error", "message": f"{exc.__class__.__name__}: {exc}"})
                self.stop.wait(retry_ms / 1000)

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=10)


CLIENTS: dict[str, Callable[[str], Client]] = {"node-eventsource": NodeEventSource, "httpx-sse": HttpxSse}


@pytest.fixture(scope="module", autouse=True)
def _delete_keys(module_prefix):
    yield
    client = redis.Redis.from_url(REDIS_URL)
    delete_prefix(client, module_prefix)
    client.close()


@pytest.mark.parametrize("library", list(CLIENTS))
def test_a_client_library_gets_the_snapshot_a_change_and_resumes_after_an_api_restart(module_prefix, readmodel, library):
    user = f"u:{uuid.uuid4().hex[:8]}"
    apply(readmodel, task_change(user, "gen-1", progress=10.0))  # version 1
    server = Server(module_prefix).start()
    client = None
    try:  # from here on the server is stopped whatever fails (a failed client start included)
        client = CLIENTS[library](f"{server.url}/users/{user}/status/stream")
        first = client.next("snapshot")
        assert first["id"] == "1" and first["data"]["liveTasks"][0]["progressPercent"] == 10.0
        assert client.next("sync")["data"] == {"version": 1, "resumedFrom": None, "sentSnapshot": True}

        apply(readmodel, task_change(user, "gen-1", progress=60.0))  # version 2, pushed
        pushed = client.next("snapshot")
        assert pushed["id"] == "2" and pushed["data"]["liveTasks"][0]["progressPercent"] == 60.0

        server.stop()  # mid-stream; while it is down the task ends and the balance changes
        assert "Traceback" not in server.stderr, server.stderr
        apply(readmodel, task_change(user, "gen-1", status="completed", progress=100.0, live=False))  # 3
        apply(readmodel, balance_change(user, "7.5", 20270, 3))  # 4
        server.start()

        resumed = client.next("snapshot", timeout_s=20)
        assert resumed["id"] == "4"
        assert resumed["data"]["liveTasks"] == []
        assert [(t["generationId"], t["status"]) for t in resumed["data"]["recentlyFinished"]] == [("gen-1", "completed")]
        assert resumed["data"]["balance"]["usdCredit"] == "7.5"
        assert client.next("sync")["data"] == {"version": 4, "resumedFrom": 2, "sentSnapshot": True}
        # The request that got it sent the last id the client had; the new process counted a resume.
        assert client.requests()[-1]["lastEventId"] == "2"
        assert server.metric("livestatus_api_stream_resumes_total", outcome="behind") == 1
        snapshots = [r["id"] for r in client.seen if r["type"] == "snapshot"]
        assert snapshots == ["1", "2", "4"]  # version 3 was never served: the client lands on the final one
    finally:
        if client is not None:
            client.close()
        server.stop()
    assert "Traceback" not in server.stderr, server.stderr
