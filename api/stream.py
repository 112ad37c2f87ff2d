"""The Server-Sent Events stream of one user's snapshots, served by sse-starlette.

Wire format: ``retry:`` first, then the current snapshot as ``event: snapshot`` with ``id:`` =
its version (skipped on a resume whose Last-Event-ID is already current), then one event per
new version. After the initial part, an ``event: sync`` tells the client it is caught up
(``{"version", "resumedFrom", "sentSnapshot"}``). Every frame is a ``ServerSentEvent``.

The ``: ping`` heartbeat is a frame of the body itself, sent when nothing else was for
``SSE_HEARTBEAT_S`` (the mailbox's wait times out): sse-starlette's ping task is off
(``ping=0``), which saves a task per stream, about 6 KiB with anyio 4.14 or later, where every task
of a task group carries its own handle, cancel scope and event (docs/performance-history.md).
sse-starlette's ``EventSourceResponse`` does the rest: the send timeout (heartbeats included),
noticing a client that left, and ending the stream when the server shuts down (it hooks uvicorn's
exit signal; each stream then gets ``SSE_SHUTDOWN_GRACE_S`` to end by itself, which ours does at
once: see :class:`EndsOnShutdown`).

A stream stays open for hours, but the routing stack that opened it (FastAPI's exit stacks,
exception wrappers, router and middleware frames) is only needed for the request: kept for the
stream's life it is about 10 KB per stream. With :class:`StreamHandoff` installed, the route
validates, authorizes and gets the first snapshot (from the fan-out's batched reads), and the response is run once that
stack has returned, still sending through the middlewares' ``send`` (CORS, latency metric).

Ownership: nothing here is shared between streams but a snapshot's encoded frame, cached on the
:class:`~api.snapshots.SharedSnapshot` by whichever stream sends it first; each stream's task owns its
mailbox's ``sent_version`` (see :mod:`api.mailbox`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, JSONServerSentEvent, ServerSentEvent
from starlette.types import ASGIApp, Receive, Scope, Send

from .deps import FanoutDep, MetricsDep, ReadableUser, SettingsDep, StreamGateDep
from .errors import InvalidRequest
from .limits import LIMIT_ERRORS
from .mailbox import Mailbox
from .metrics import Metrics
from .openapi import stream_responses
from .routes import ERRORS
from .settings import Settings
from .snapshots import SharedSnapshot

log = logging.getLogger("api.stream")
HANDOFF = "livestatus.stream_handoff"
router = APIRouter(tags=["status"], responses={**ERRORS, **LIMIT_ERRORS})
MAX_VERSION = 2**63 - 1
HEARTBEAT_JITTER = 0.2  # a heartbeat comes after heartbeat_s less up to this share of it
PING = ServerSentEvent(comment="ping").encode()  # the heartbeat (sse-starlette's own carries a timestamp)


def frame(snapshot: SharedSnapshot) -> bytes:
    """The ``event: snapshot`` SSE frame, ``id:`` = version (JSON has no raw newlines); encoded
    once per snapshot, however many streams send it."""
    if snapshot.frame is None:
        snapshot.frame = ServerSentEvent(snapshot.json, id=str(snapshot.version), event="snapshot").encode()
    return snapshot.frame


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


def opening(first: SharedSnapshot, resumed_from: int | None, retry_ms: int) -> tuple[bytes, bool]:
    """The bytes a stream starts with (one write), and whether they hold the snapshot."""
    # A client ahead of us holds a state from another history (the user's keys were rebuilt):
    # it gets the current snapshot too.
    send_first = resumed_from is None or first.version != resumed_from
    sync = {"version": first.version, "resumedFrom": resumed_from, "sentSnapshot": send_first}
    parts = [ServerSentEvent(comment="livestatus", retry=retry_ms).encode()]
    if send_first:
        parts.append(frame(first))
    parts.append(JSONServerSentEvent(sync, event="sync").encode())
    return b"".join(parts), send_first


async def frames(opening: bytes, mailbox: Mailbox, metrics: Metrics, heartbeat_s: float) -> AsyncIterator[bytes]:
    """The stream's body: ``opening``, then each new snapshot's frame until the mailbox closes
    (and then its farewell, if it was ended with a reason: an expired token), and a ``: ping``
    whenever nothing was sent for ``heartbeat_s`` less up to a fifth (drawn each time: streams
    opened together, 200 served by one batched read, would otherwise ping in the same tick of
    the event loop every ``heartbeat_s``, delaying any delivery due then)."""
    yield opening
    del opening  # nothing sent is held while the stream waits
    while True:
        if not await mailbox.wait(heartbeat_s * (1 - HEARTBEAT_JITTER * random.random())):
            yield PING
            continue
        if mailbox.closed:
            if mailbox.farewell:
                yield mailbox.farewell
            return
        snapshot = mailbox.take()
        if snapshot is None or snapshot.version <= mailbox.sent_version:
            continue  # woken for nothing, or read before the first snapshot was sent
        mailbox.sent_version = snapshot.version
        metrics.events_sent.inc()
        encoded = frame(snapshot)
        del snapshot
        yield encoded


class EndsOnShutdown:
    """The ``shutdown_event`` handed to sse-starlette: setting it closes the stream's mailbox,
    so the stream ends by itself (a complete response) within the grace period."""

    __slots__ = ("mailbox",)

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    def set(self) -> None:
        self.mailbox.close()

    def is_set(self) -> bool:
        return self.mailbox.closed


class StatusStream(EventSourceResponse):
    """sse-starlette's response for one mailbox: counts the open stream, logs a dropped slow
    client, and closes the mailbox however the response ends (even if the body never started)."""

    def __init__(self, opening: bytes, mailbox: Mailbox, metrics: Metrics, settings: Settings) -> None:
        super().__init__(
            frames(opening, mailbox, metrics, settings.heartbeat_s),
            ping=0,  # the body sends the heartbeats: one task per stream fewer
            send_timeout=settings.send_timeout_s,
            shutdown_event=EndsOnShutdown(mailbox),  # type: ignore[arg-type]  # only set() is called
            shutdown_grace_period=settings.shutdown_grace_s,
        )
        self.mailbox = mailbox
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handoff = scope.get(HANDOFF)
        if handoff is not None:
            handoff.append((self, send))  # StreamHandoff runs it once the routing stack has returned
            return
        await self.run(scope, receive, send)

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the stream until it ends (sse-starlette's ``EventSourceResponse.__call__``)."""
        self.metrics.open_streams.inc()
        try:
            await super().__call__(scope, receive, send)
        except TimeoutError:  # sse-starlette's SendTimeoutError: the client is gone or stuck
            log.warning("dropped a stream of %s: its client accepted nothing for %.0fs",
                        self.mailbox.uid, self.send_timeout)
        finally:
            self.mailbox.close()
            self.metrics.open_streams.dec()


class StreamHandoff:
    """ASGI middleware (add it outermost) that runs a stream once the stack that opened it returned.

    The stack gets a copy of the scope, so whatever it keeps there (FastAPI's exit stacks) goes
    with it; the stream is served with the server's own scope and ``receive``, and the ``send``
    the route was given (through every middleware).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handoff: list[tuple[StatusStream, Send]] = []
        try:
            await self.app({**scope, HANDOFF: handoff}, receive, send)
        except BaseException:
            for stream, _ in handoff:
                stream.mailbox.close()
            raise
        if handoff:
            stream, inner_send = handoff.pop()
            await stream.run(scope, receive, inner_send)


@router.get(
    "/users/{masterAccountId}/status/stream",
    response_class=EventSourceResponse,
    status_code=200,
    operation_id="streamStatus",
    responses=stream_responses(),
)
async def status_stream(
    uid: ReadableUser,
    fanout: FanoutDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    gate: StreamGateDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None,
    lastEventId: Annotated[str | None, Query(max_length=40, description="for clients that cannot set Last-Event-ID")] = None,
) -> StatusStream:
    """Server-Sent Events: the current snapshot, then one event per new version (resumable)."""
    resumed_from = parse_last_event_id(last_event_id, lastEventId)
    mailbox, first = await gate.open(fanout)  # 429/503 past a limit
    body, sent_first = opening(first, resumed_from, settings.retry_ms)
    if resumed_from is not None:
        metrics.resumes.labels(outcome="behind" if sent_first else "current").inc()
    if sent_first:
        metrics.events_sent.inc()
    mailbox.mark_sent(first.version)
    return StatusStream(body, mailbox, metrics, settings)
