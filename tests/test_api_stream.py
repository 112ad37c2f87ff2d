"""The SSE stream against a real uvicorn on a loopback port, with the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import socket
import time
import uuid

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.__main__ import server as api_server
from api.auth import mint_token
from api.errors import InvalidRequest
from api.main import create_app
from api.settings import Settings
from api.stream import parse_last_event_id
from devkit.waits import wait_for
from readmodel.settings import StoreSettings
from tests.apiserver import KEY, SECRET, SSE, Server, apply, auth, balance_change, free_port, task_change
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.both_backends  # Every real-Redis test here runs on a single Redis and on a Redis Cluster.


@pytest.fixture
def user() -> str:
    return f"u:{uuid.uuid4().hex[:8]}"


def stream(server: Server, user: str, headers: dict[str, str] | None = None, **params: str):
    return httpx.stream(
        "GET", f"{server.url}/users/{user}/status/stream", headers={**auth(), **(headers or {})}, params=params, timeout=5
    )


def test_first_event_is_the_current_snapshot_with_its_version_as_id(server, readmodel, user):
    apply(readmodel, balance_change(user, "3.5", 9459, 1))
    with stream(server, user) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        sse = SSE(response)
        event = sse.next()
        assert event.event == "snapshot" and event.id == "1"
        assert event.json()["balance"]["usdCredit"] == "3.5"
        assert "livestatus" in sse.comments  # the opening comment that carries retry:


def test_the_stream_sets_the_reconnect_delay(server, user):
    with stream(server, user) as response:
        lines = response.iter_lines()
        first_lines = [next(lines) for _ in range(2)]
    assert first_lines == [": livestatus", "retry: 200"]


def test_a_new_version_is_pushed_after_the_read_model_changes(server, readmodel, user):
    with stream(server, user) as response:
        sse = SSE(response)
        assert sse.snapshot().id == "0"
        assert sse.next().event == "sync"
        apply(readmodel, task_change(user, "gen-1", progress=12.0))
        event = sse.snapshot()
        assert event.id == "1" and event.json()["liveTasks"][0]["progressPercent"] == 12.0
        apply(readmodel, task_change(user, "gen-1", progress=80.0))
        assert sse.snapshot().json()["liveTasks"][0]["progressPercent"] == 80.0


@pytest.mark.parametrize("via", ["header", "query"])
def test_resuming_from_an_older_version_sends_the_current_snapshot_once(server, readmodel, user, via):
    apply(readmodel, balance_change(user, "1", 2702, 0))
    apply(readmodel, balance_change(user, "2", 5405, 0))
    behind_before = server.metric("livestatus_api_stream_resumes_total", outcome="behind")
    kwargs = {"headers": {"Last-Event-ID": "1"}} if via == "header" else {"lastEventId": "1"}
    with stream(server, user, **kwargs) as response:
        sse = SSE(response)
        event = sse.next()
        assert event.event == "snapshot" and event.id == "2"
        sync = sse.next()
        assert sync.event == "sync" and sync.json() == {"version": 2, "resumedFrom": 1, "sentSnapshot": True}
    assert server.metric("livestatus_api_stream_resumes_total", outcome="behind") == behind_before + 1


def test_resuming_at_the_current_version_sends_no_snapshot_until_the_next_change(server, readmodel, user):
    apply(readmodel, balance_change(user, "1", 2702, 0))
    current_before = server.metric("livestatus_api_stream_resumes_total", outcome="current")
    with stream(server, user, headers={"Last-Event-ID": "1"}) as response:
        sse = SSE(response)
        first = sse.next()
        assert first.event == "sync" and first.json()["sentSnapshot"] is False
        apply(readmodel, balance_change(user, "5", 13513, 0))
        assert sse.snapshot().id == "2"
    assert server.metric("livestatus_api_stream_resumes_total", outcome="current") == current_before + 1


def test_a_malformed_last_event_id_is_a_400_json_error(server, user):
    response = httpx.get(f"{server.url}/users/{user}/status/stream", headers={**auth(), "Last-Event-ID": "abc"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("raw", ["²", "١٢", "1²", "+1", "-1", "1_000", "0x1", "1 2", "9" * 20, str(2**63)])
@pytest.mark.parametrize("via", ["header", "query"])
def test_a_last_event_id_of_anything_but_ascii_digits_is_a_400_never_a_500(server, user, raw, via):
    url = f"{server.url}/users/{user}/status/stream"
    if via == "header":
        value = raw.encode("latin-1") if max(map(ord, raw)) < 256 else raw.encode()  # "²" arrives as itself
        response = httpx.get(url, headers={**auth(), "Last-Event-ID": value})
    else:
        response = httpx.get(url, headers=auth(), params={"lastEventId": raw})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"


@given(st.text(max_size=25))
def test_parse_last_event_id_accepts_ascii_digits_only_and_never_raises_anything_else(raw):
    try:
        parsed = parse_last_event_id(raw, None)
    except InvalidRequest:
        assert not re.fullmatch(r"[ \t]*[0-9]{1,19}[ \t]*", raw) or int(raw) >= 2**63
        return
    assert parsed is None if raw == "" else parsed == int(raw.strip(" \t")) and raw.strip(" \t").isascii()


def test_heartbeat_comments_flow_while_nothing_changes(server, user):
    with stream(server, user) as response:
        sse = SSE(response)
        sse.next()
        started = time.monotonic()
        lines = sse.lines
        pings = 0
        while pings < 2 and time.monotonic() - started < 3:
            if next(lines).startswith(": ping"):
                pings += 1
        assert pings == 2  # at SSE_HEARTBEAT_S=0.3, two within ~0.6 s


def test_the_panel_token_in_the_query_opens_the_stream(server, user):
    token = mint_token(SECRET, user, 60)
    with httpx.stream("GET", f"{server.url}/users/{user}/status/stream", params={"token": token}, timeout=5) as response:
        sse = SSE(response)
        assert response.status_code == 200 and sse.next().event == "snapshot"


def test_a_vanished_client_is_cleaned_up_and_its_subscription_dropped(server, user):
    assert server.metric("livestatus_api_open_streams") == 0
    with stream(server, user) as response:
        sse = SSE(response)  # keep it: dropping the line iterator closes the response
        sse.next()
        assert server.metric("livestatus_api_open_streams") == 1
        wait_for(lambda: server.metric("livestatus_api_subscribed_users") == 1, what="subscription")
    wait_for(lambda: server.metric("livestatus_api_open_streams") == 0, what="stream cleanup")
    wait_for(lambda: server.metric("livestatus_api_subscribed_users") == 0, what="unsubscribe")


def test_many_streams_of_one_user_share_one_read_per_version(server, readmodel, user):
    reads = lambda: server.metric("livestatus_api_fanout_reads_total")  # noqa: E731
    reads_before = reads()
    streams = [stream(server, user) for _ in range(5)]
    readers = [SSE(s.__enter__()) for s in streams]
    try:
        for reader in readers:
            reader.next()
        # The subscription's confirmation makes one catch-up read, whatever the number of streams.
        wait_for(lambda: reads() == reads_before + 1, what="the catch-up read")
        apply(readmodel, task_change(user, "gen-1"))
        assert all(reader.snapshot().id == "1" for reader in readers)
        assert reads() == reads_before + 2
    finally:
        for s in streams:
            s.__exit__(None, None, None)


def test_a_stalled_client_gets_only_the_latest_state_when_it_reads_again(server, readmodel, user):
    """A client that stops reading is not queued for: undelivered states are replaced."""
    dropped_before = server.metric("livestatus_api_dropped_states_total")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window fills fast
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(
        f"GET /users/{user}/status/stream HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {auth()['Authorization'][7:]}\r\n\r\n".encode()
    )
    wait_for(lambda: server.metric("livestatus_api_open_streams") >= 1, what="stream open")
    # ~200 KB snapshots, 12 MB in all: more than the kernel's and uvicorn's buffers hold.
    name = "T" * 1900
    apply(readmodel, *[task_change(user, f"gen-{i}", tool_name=name) for i in range(100)])
    versions = 60
    for n in range(1, versions):
        apply(readmodel, task_change(user, "gen-0", progress=float(n), tool_name=name))
        time.sleep(0.03)  # slow enough for the fan-out to read each version: the listener must drop
    final = versions  # one version per apply
    wait_for(lambda: server.metric("livestatus_api_dropped_states_total") > dropped_before, what="a dropped state")
    # Catch up: read everything that was buffered and whatever comes next.
    sock.settimeout(0.5)
    received = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and f"id: {final}\r\n".encode() not in received:
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        if not chunk:
            break
        received += chunk
    sock.close()
    ids = [int(line[4:]) for line in received.decode(errors="replace").split("\r\n") if line.startswith("id: ")]
    assert ids[-1] == final  # the latest state arrives
    assert len(ids) < versions  # intermediate states were replaced, not queued
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # never out of order, never repeated


def test_sigterm_ends_open_streams_promptly_with_a_complete_response(module_prefix, user, store_env):
    server = Server(module_prefix, env=dict(store_env)).start()
    try:
        with stream(server, user) as response:
            sse = SSE(response)
            sse.next()
            exit_s = server.stop()
            for _ in sse.lines:  # the response ends cleanly (its last chunk), no transport error
                pass
        assert exit_s < 5.0, f"took {exit_s:.1f}s to exit with an open stream"
        assert server.proc.returncode in (0, -15)  # uvicorn re-raises the signal once it has shut down
        assert "Traceback" not in server.stderr, server.stderr
        assert "without completing response" not in server.stderr, server.stderr
    finally:
        server.stop()


def _stalled_stream(server: Server, user: str) -> socket.socket:
    """A stream whose client never reads (a tiny receive window fills fast)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET /users/{user}/status/stream HTTP/1.1\r\nHost: x\r\n{_auth_line()}\r\n".encode())
    return sock


def _auth_line() -> str:
    return f"Authorization: Bearer {KEY}\r\n"


def test_a_client_that_accepts_nothing_for_the_send_timeout_is_dropped(module_prefix, readmodel, user, store_env):
    server = Server(module_prefix, env={**store_env, "SSE_SEND_TIMEOUT_S": "0.5"}).start()
    try:
        sock = _stalled_stream(server, user)
        wait_for(lambda: server.metric("livestatus_api_open_streams") == 1, what="stream open")
        name = "T" * 1900  # ~200 KB snapshots: the kernel's and uvicorn's buffers fill within a few MB
        apply(readmodel, *[task_change(user, f"gen-{i}", tool_name=name) for i in range(100)])
        deadline = time.monotonic() + 20
        n = 0
        while server.metric("livestatus_api_open_streams") != 0 and time.monotonic() < deadline:
            n += 1
            apply(readmodel, task_change(user, "gen-0", progress=float(n % 100), tool_name=name))
            time.sleep(0.05)
        assert server.metric("livestatus_api_open_streams") == 0
        sock.close()
    finally:
        server.stop()
    assert "accepted nothing" in server.stderr and "Traceback" not in server.stderr, server.stderr


async def test_an_open_stream_costs_its_request_task_and_sse_starlettes_three_and_all_end_when_it_does(module_prefix):
    """Per stream: the request task and sse-starlette's send, shutdown and disconnect tasks (no
    ping task: the body sends the heartbeats; one shutdown watcher for the whole process), and not
    the routing stack that opened it; none is left once the clients are gone."""
    settings = Settings(store=StoreSettings(REDIS_URL, module_prefix), api_keys=(KEY,), auth_secret=SECRET,
                        host="127.0.0.1", port=free_port())
    app = create_app(settings)
    uvicorn_server = api_server(app, settings, log_level="warning")
    serving = asyncio.create_task(uvicorn_server.serve())
    clients = []
    try:
        async with asyncio.timeout(10):
            while not uvicorn_server.started:
                await asyncio.sleep(0.02)
        fanout = app.state.fanout

        async def settled_tasks() -> set[asyncio.Task]:
            async with asyncio.timeout(5):  # subscription changes and reads are waiting
                while not fanout.idle:
                    await asyncio.sleep(0.01)
            # sse-starlette's shutdown watcher (one per thread, started by the first stream of a
            # thread whose flag an earlier test's closed loop may have left set) is not the stream's.
            return {task for task in asyncio.all_tasks() if getattr(task.get_coro(), "__name__", "") != "_shutdown_watcher"}

        def exit_stacks() -> int:
            gc.collect()
            return sum(isinstance(o, contextlib.AsyncExitStack) for o in gc.get_objects())

        idle = await settled_tasks()
        idle_stacks = exit_stacks()
        for i in range(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", settings.port)
            writer.write(f"GET /users/tasks-{i % 4}/status/stream HTTP/1.1\r\nHost: x\r\n{_auth_line()}\r\n".encode())
            async with asyncio.timeout(5):
                await reader.readuntil(b"event: sync")
            clients.append(writer)
        # Counted as the tasks that were not there before (a task of the idle server that ends
        # meanwhile, a retry of its positions reader under load, is not the streams' business).
        assert len(await settled_tasks() - idle) == 4 * 10
        # The routing stack that opened each stream (FastAPI's exit stacks among it) is gone.
        assert exit_stacks() == idle_stacks
        for writer in clients:
            writer.close()
        async with asyncio.timeout(5):
            while fanout.listener_count() or await settled_tasks() - idle:
                await asyncio.sleep(0.02)
    finally:
        for writer in clients:
            writer.close()
        uvicorn_server.should_exit = True
        await asyncio.wait_for(serving, 10)
