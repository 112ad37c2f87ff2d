"""The Server-Sent Events stream of one user's snapshots.

Wire format: ``retry:`` first, then the current snapshot as ``event: snapshot`` with ``id:`` =
its version (skipped on a resume whose Last-Event-ID is already current), then one event per
new version. After the initial part, an ``event: sync`` tells the client it is caught up
(``{"version", "resumedFrom", "sentSnapshot"}``). Heartbeat comments keep proxies from closing
the stream.

A stream is held by tens of thousands at once, so it costs as little as we can make it: the
request's own task writes the frames and waits on the listener's mailbox (the heartbeat is that
wait's timeout); one small task waits for the client to leave, which uvicorn only tells through
``receive()`` (its ``send()`` to a vanished client returns quietly). Server shutdown closes every
listener at once (:meth:`Fanout.end_streams`), so no stream needs a watcher of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from . import snapshots
from .deps import FanoutDep, LayoutDep, MetricsDep, ReadableUser, RedisDep, SettingsDep, StreamGateDep
from .errors import InvalidRequest
from .fanout import Listener, Snapshot
from .limits import LIMIT_ERRORS
from .metrics import Metrics
from .routes import ERRORS

log = logging.getLogger("api.stream")
router = APIRouter(tags=["status"], responses={**ERRORS, **LIMIT_ERRORS})
MAX_VERSION = 2**63 - 1
HEARTBEAT = b": ping\r\n\r\n"
HANDOFF = "livestatus.stream_handoff"
REQUEST_ONLY_SCOPE_KEYS = ("fastapi_astack", "fastapi_inner_astack", "fastapi_function_astack", "fastapi_middleware_astack")
HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
)


def parse_last_event_id(header: str | None, query: str | None) -> int | None:
    """The version the client already has (header first, then the query), or None."""
    raw = header if header not in (None, "") else query
    if raw in (None, ""):
        return None
    text = raw.strip(" \t")
    # ASCII digits only: str.isdigit() also takes "²" or "١", which int() refuses or misreads.
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_VERSION:
        raise InvalidRequest("Last-Event-ID / lastEventId must be a snapshot version (a non-negative integer)")
    return int(text)


def opening(first: Snapshot, resumed_from: int | None, retry_ms: int) -> tuple[bytes, bool]:
    """The bytes a stream starts with, and whether they hold the snapshot."""
    # A client ahead of us holds a state from another history (the user's keys were rebuilt):
    # it gets the current snapshot too.
    send_first = resumed_from is None or first.version != resumed_from
    sync = json.dumps({"version": first.version, "resumedFrom": resumed_from, "sentSnapshot": send_first})
    parts = [f": livestatus\r\nretry: {retry_ms}\r\n\r\n".encode()]
    if send_first:
        parts.append(first.frame)
    parts.append(f"event: sync\r\ndata: {sync}\r\n\r\n".encode())
    return b"".join(parts), send_first


async def _until_disconnect(receive: Receive, listener: Listener) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    listener.close()


class StatusStream(Response):
    """The SSE response of one stream: ``opening``, then each snapshot its listener gets.

    Called by the route, it sends only the response head (so the middlewares see it) and, when
    :class:`StreamHandoff` is installed, hands itself over and returns: the stream then runs
    outside the routing stack. The route's dependencies must therefore hold nothing that needs
    closing (no ``yield`` dependencies): they are finished before the stream is.
    """

    def __init__(
        self, opening: bytes, listener: Listener, metrics: Metrics, heartbeat_s: float, send_timeout_s: float
    ) -> None:
        # Response.__init__ is skipped on purpose: it renders a body and builds headers we do not keep.
        self.status_code = 200
        self.background = None  # FastAPI sets it; the stream route takes no background tasks
        self.opening = opening
        self.listener = listener
        self.metrics = metrics
        self.heartbeat_s = heartbeat_s
        self.send_timeout_s = send_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": list(HEADERS)})
        except BaseException:
            self.listener.close()
            raise
        handoff = scope.get(HANDOFF)
        if handoff is not None:
            handoff.append(self)
        else:
            await self.run(receive, send)

    async def run(self, receive: Receive, send: Send) -> None:
        """Send the opening, then every new snapshot and heartbeats, until the listener closes."""
        listener = self.listener
        self.metrics.open_streams.inc()
        watcher = asyncio.ensure_future(_until_disconnect(receive, listener))
        try:
            body: bytes | None = self.opening
            self.opening = b""
            while body is not None:
                if body:
                    async with asyncio.timeout(self.send_timeout_s):
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                    body = b""  # not held while waiting
                body = await self._next_body(listener)
            # A listener ended with a reason (an expired token) says it in a last event.
            async with asyncio.timeout(self.send_timeout_s):
                await send({"type": "http.response.body", "body": listener.farewell or b"", "more_body": False})
        except TimeoutError:
            log.warning("dropped a stream of %s: its client accepted nothing for %.0fs", listener.uid, self.send_timeout_s)
        finally:
            watcher.cancel()
            listener.close()
            self.metrics.open_streams.dec()

    async def _next_body(self, listener: Listener) -> bytes | None:
        """The next frame to send (a heartbeat when nothing happened for a while); None at the end."""
        if not await listener.wait(self.heartbeat_s):
            return HEARTBEAT
        snapshot = listener.take()
        if snapshot is None:
            return None if listener.closed else b""
        if snapshot.version <= listener.sent_version:
            return b""  # read before the first snapshot was sent
        listener.sent_version = snapshot.version
        self.metrics.events_sent.inc()
        return snapshot.frame


class StreamHandoff:
    """ASGI middleware (add it outermost) that runs streams once the routing stack has returned.

    A stream stays open for hours, but the stack that opened it (FastAPI's exit stacks,
    exception wrappers, router and middleware frames) is only needed for the request: kept for
    the stream's life it was about 10 KB per stream. The route validates, authorizes, reads the
    first snapshot and sends the response head through the whole stack as usual; then the
    stack unwinds and the stream's body is written from here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handoff: list[StatusStream] = []
        scope[HANDOFF] = handoff
        try:
            await self.app(scope, receive, send)
        except BaseException:
            for stream in handoff:
                stream.listener.close()
            raise
        finally:
            del scope[HANDOFF]
            for key in REQUEST_ONLY_SCOPE_KEYS:  # what the stack left in the scope, done with now
                scope.pop(key, None)
        if handoff:
            await handoff.pop().run(receive, send)


@router.get(
    "/users/{masterAccountId}/status/stream",
    response_class=StatusStream,
    status_code=200,
    responses={200: {"content": {"text/event-stream": {}}, "description": "a stream of snapshot events"}},
)
async def status_stream(
    uid: ReadableUser,
    redis: RedisDep,
    layout: LayoutDep,
    fanout: FanoutDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    gate: StreamGateDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None,
    lastEventId: Annotated[str | None, Query(max_length=40, description="for clients that cannot set Last-Event-ID")] = None,  # noqa: N803
) -> StatusStream:
    """Server-Sent Events: the current snapshot, then one event per new version (resumable)."""
    resumed_from = parse_last_event_id(last_event_id, lastEventId)
    listener = gate.listen(fanout)  # before the read: a change right after it is not missed; 429/503 past a limit
    try:
        first = Snapshot(await snapshots.read(redis, layout, uid, settings.estimate_cap_percent, settings.live_tasks_shown))
    except BaseException:
        listener.close()
        raise
    body, sent_first = opening(first, resumed_from, settings.retry_ms)
    if resumed_from is not None:
        metrics.resumes.labels(caught_up="true" if sent_first else "false").inc()
    if sent_first:
        metrics.events_sent.inc()
    listener.sent_version = max(listener.sent_version, first.version)
    return StatusStream(body, listener, metrics, settings.heartbeat_s, settings.send_timeout_s)
