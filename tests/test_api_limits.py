"""Stream limits and token expiry against a real server with real connections."""

from __future__ import annotations

import contextlib
import time
import uuid

import httpx
import pytest

from api.auth import Principal, mint_token
from api.errors import ServerBusy, TooManyStreams
from api.limits import StreamLimiter
from devkit.waits import wait_for
from tests.apiserver import KEY, SECRET, SSE, Server, auth


@pytest.fixture
def start(module_prefix):
    servers: list[Server] = []

    def start(**env: str) -> Server:
        server = Server(module_prefix, env=env).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class Streams:
    """Streams held open on real connections until the block ends (or one is closed)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.stack = contextlib.ExitStack()
        self.open: list[contextlib.ExitStack] = []

    def __enter__(self) -> Streams:
        return self

    def __exit__(self, *exc) -> None:
        for held in self.open:
            held.close()

    def get(self, user: str, token: str = KEY, via: str = "header") -> httpx.Response:
        """Open a stream; an accepted one is held open (its first event read), a refused one read whole."""
        held = contextlib.ExitStack()
        kwargs = {"headers": auth(token)} if via == "header" else {"params": {"token": token}}
        response = held.enter_context(
            httpx.stream("GET", f"{self.server.url}/users/{user}/status/stream", timeout=5, **kwargs)
        )
        if response.status_code == 200:
            events = SSE(response)  # held too: dropping its line iterator would close the response
            events.next()
            held.callback(lambda: events)
            self.open.append(held)
        else:
            response.read()
            held.close()
        return response

    def close_one(self) -> None:
        self.open.pop(0).close()


def _refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert int(response.headers["retry-after"]) > 0


def test_a_user_past_its_stream_limit_gets_429_until_one_closes(start):
    server = start(STREAMS_PER_USER="2")
    user, other = f"u{uuid.uuid4().hex[:6]}", f"v{uuid.uuid4().hex[:6]}"
    with Streams(server) as streams:
        assert [streams.get(user).status_code for _ in range(2)] == [200, 200]
        _refused(streams.get(user), 429, "too_many_streams")
        _refused(streams.get(user, mint_token(SECRET, user, 600), via="query"), 429, "too_many_streams")  # any credential
        assert streams.get(other).status_code == 200  # another user is not affected
        streams.close_one()
        wait_for(lambda: server.metric("livestatus_api_open_streams") == 2, what="the closed stream to be noticed")
        assert streams.get(user).status_code == 200
    assert server.metric("livestatus_api_streams_refused_total", limit="user") == 2


def test_one_token_past_its_stream_limit_gets_429_and_another_token_of_the_user_does_not(start):
    server = start(STREAMS_PER_TOKEN="2")
    user = f"u{uuid.uuid4().hex[:6]}"
    first, second = mint_token(SECRET, user, 600), mint_token(SECRET, user, 601)
    with Streams(server) as streams:
        assert [streams.get(user, first, via="query").status_code for _ in range(2)] == [200, 200]
        _refused(streams.get(user, first), 429, "too_many_streams")  # the same token, by header this time
        assert streams.get(user, second, via="query").status_code == 200
    assert server.metric("livestatus_api_streams_refused_total", limit="credential") == 1


def test_a_service_key_past_its_stream_limit_gets_429_across_users(start):
    server = start(STREAMS_PER_SERVICE_KEY="3")
    with Streams(server) as streams:
        assert [streams.get(f"user-{i}").status_code for i in range(3)] == [200, 200, 200]
        response = streams.get("user-3")
        _refused(response, 429, "too_many_streams")
        assert "key" in response.json()["error"]["message"]


def test_a_process_past_its_stream_limit_gets_503_with_retry_after(start):
    server = start(STREAMS_PER_PROCESS="3")
    with Streams(server) as streams:
        assert [streams.get(f"user-{i}").status_code for i in range(3)] == [200, 200, 200]
        _refused(streams.get("user-3"), 503, "server_busy")
        streams.close_one()
        wait_for(lambda: server.metric("livestatus_api_open_streams") == 2, what="the closed stream to be noticed")
        assert streams.get("user-3").status_code == 200
    assert server.metric("livestatus_api_streams_refused_total", limit="process") == 1


def test_a_user_token_stream_ends_with_a_reason_when_the_token_expires_and_a_key_stream_stays(start):
    server = start(TOKEN_LEEWAY_S="1")
    user = f"u{uuid.uuid4().hex[:6]}"
    token = mint_token(SECRET, user, 2)  # accepted until about 3 s from now (exp + leeway)
    opened = time.time()
    with httpx.stream("GET", f"{server.url}/users/{user}/status/stream", headers=auth(KEY), timeout=5) as keyed:
        keyed_events = SSE(keyed)
        keyed_events.next()
        with httpx.stream("GET", f"{server.url}/users/{user}/status/stream", params={"token": token}, timeout=5) as r:
            events = SSE(r)
            assert events.next().event == "snapshot"
            end = events.next(timeout_s=8, kinds=("end",))
            ended = time.time()
            assert end.json()["reason"] == "token_expired"
            assert list(events.lines) == []  # and then the stream is over
        assert 1.5 <= ended - opened <= 6
        wait_for(lambda: server.metric("livestatus_api_open_streams") == 1, what="the expired stream to close")
        # The service-key stream of the same user is still open: its heartbeats keep coming.
        deadline = time.monotonic() + 3
        while not next(keyed_events.lines).startswith(": ping"):
            assert time.monotonic() < deadline
    # Reopening with the same token is refused: the panel must come back with a fresh one.
    response = httpx.get(f"{server.url}/users/{user}/status/stream", params={"token": token})
    assert response.status_code == 401 and response.json()["error"]["code"] == "token_expired"


def test_the_limiter_counts_per_user_per_credential_and_in_all_and_releases_once():
    limiter = StreamLimiter(per_user=2, per_token=1, per_service_key=2, per_process=4)
    key, token = Principal("service", credential="key:0"), Principal("user", "a", credential="token:x")
    slots = [limiter.acquire("a", key), limiter.acquire("a", token)]
    with pytest.raises(TooManyStreams):
        limiter.acquire("a", key)  # user a is at 2
    slots += [limiter.acquire("b", key)]
    with pytest.raises(TooManyStreams):
        limiter.acquire("c", key)  # the key is at 2
    slots += [limiter.acquire("c", Principal("user", "c", credential="token:y"))]
    with pytest.raises(ServerBusy):
        limiter.acquire("d", Principal("user", "d", credential="token:z"))  # 4 in all
    slots[0].release()
    slots[0].release()  # idempotent
    assert (limiter.count(), limiter.count(uid="a"), limiter.count(credential="key:0")) == (3, 1, 1)
    with pytest.raises(TooManyStreams):
        limiter.acquire("e", Principal("user", "e", credential="token:y"))  # that token is at 1
    for slot in slots:
        slot.release()
    assert limiter.count() == 0 and limiter.entries() == 0  # nothing kept for users and keys gone
    dev = Principal("dev", credential="dev")  # insecure dev mode: callers share one credential, counted like a key
    assert [limiter.acquire(f"d{i}", dev) for i in range(2)] and limiter.count(credential="dev") == 2
