"""The live chat text stream against the real API process (a short TEXT_STREAM_INTERVAL_S): events
spaced by at least the interval, bursts coalesced to the newest state, every event within the
platform's limit, a final event when the last live task finishes, then the end of the stream."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from api.render import DISCORD_LIMIT, length
from devkit.waits import wait_for
from readmodel import ReadModel

from .apiserver import SSE, Server, apply, auth, task_change

INTERVAL_S = 0.6


@pytest.fixture
def server(prefix, store_env):
    server = Server(prefix, env={**store_env, "TEXT_STREAM_INTERVAL_S": str(INTERVAL_S)}).start()
    yield server
    server.stop()


@pytest.fixture
def readmodel(real_redis, layout) -> ReadModel:
    return ReadModel(real_redis, layout)


class Reader:
    """Reads a text stream on a thread, keeping each event with the moment it arrived."""

    def __init__(self, server: Server, uid: str, **params: str) -> None:
        self.events: list[tuple[float, str, dict]] = []
        self.ended = threading.Event()
        self.status: int | None = None
        self.rest: list[str] | None = None
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._read, args=(server, uid, params), daemon=True)
        self._thread.start()

    def _read(self, server: Server, uid: str, params: dict[str, str]) -> None:
        with httpx.stream("GET", f"{server.url}/users/{uid}/status/text/stream", params=params, headers=auth(),
                          timeout=30) as response:
            self.status = response.status_code
            sse = SSE(response)
            try:
                while True:
                    event = sse.next(30, kinds=("text", "final"))
                    self.events.append((time.monotonic(), event.event or "", json.loads(event.data)))
                    if event.event == "final":
                        break
                # After the final event the server ends the response: nothing but its end follows.
                self.rest = [line for line in sse.lines if line.strip()]
            except (TimeoutError, httpx.HTTPError) as exc:  # the server ended the stream before a final event
                self.error = exc
            finally:
                self.ended.set()

    def texts(self) -> list[str]:
        return [data["text"] for _, _, data in self.events]


def test_a_burst_is_paced_and_coalesced_and_the_finish_ends_the_stream(server, readmodel):
    apply(readmodel, task_change("t1", "g1", progress=5.0))
    reader = Reader(server, "t1", platform="telegram")
    wait_for(lambda: len(reader.events) == 1, 10, "the opening text")
    assert "5%" in reader.texts()[0] and reader.events[0][1] == "text"
    for percent in range(10, 100, 3):  # 30 changes, as fast as the read model takes them
        apply(readmodel, task_change("t1", "g1", progress=float(percent)))
    wait_for(lambda: "97%" in reader.texts()[-1], 15, "the newest state")
    apply(readmodel, task_change("t1", "g1", status="completed", live=False, progress=100.0, source="status"))
    assert reader.ended.wait(15), "the stream did not end after the final event"
    kinds = [kind for _, kind, _ in reader.events]
    assert kinds[-1] == "final" and set(kinds[:-1]) == {"text"}
    assert reader.events[-1][2]["liveTasks"] == 0 and "Nothing running" in reader.texts()[-1]
    assert len(reader.events) < 30  # coalesced, not one per change
    # At most one event per interval, seen through a socket: the k-th event no earlier than k
    # intervals after the first (one late delivery shortens the gap after it; the gap between sends
    # is checked exactly in tests/test_api_textpacing.py).
    since_first = [at - reader.events[0][0] for at, _, _ in reader.events]
    assert all(elapsed >= k * INTERVAL_S - 0.1 for k, elapsed in enumerate(since_first)), since_first
    assert len(set(reader.texts())) == len(reader.texts())  # an event only when the text changed
    assert reader.rest == [] and reader.error is None


def test_a_user_with_nothing_live_gets_the_final_text_at_once(server):
    reader = Reader(server, "t2", platform="discord")
    assert reader.ended.wait(10)
    assert [kind for _, kind, _ in reader.events] == ["final"]
    assert reader.events[0][2]["allowedMentions"] == {"parse": []}


def test_every_event_fits_the_platform_limit(server, readmodel):
    long_name = "Upscale ×4 " + "ω" * 300
    apply(readmodel, *[task_change("t3", f"g{i}", tool_name=long_name, progress=float(i)) for i in range(40)])
    reader = Reader(server, "t3", platform="discord")
    wait_for(lambda: len(reader.events) == 1, 10, "the opening text")
    apply(readmodel, *[task_change("t3", f"g{i}", tool_name=long_name, progress=50.0 + i) for i in range(40)])
    wait_for(lambda: len(reader.events) == 2, 10, "the second text")
    assert all(length(text) <= DISCORD_LIMIT for text in reader.texts())
    assert "more tasks not shown" in reader.texts()[-1]


def test_an_interval_below_the_servers_minimum_is_a_400(server):
    reply = httpx.get(f"{server.url}/users/t4/status/text/stream", params={"platform": "telegram", "intervalS": "0.1"},
                      headers=auth(), timeout=10)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "invalid_request"
