"""The Server-Sent Events stream of one user's snapshots.

Wire format: ``retry:`` first, then the current snapshot as ``event: snapshot`` with ``id:`` =
its version (skipped on a resume whose Last-Event-ID is already current), then one event per
new version. After the initial part, an ``event: sync`` tells the client it is caught up
(``{"version", "resumedFrom", "sentSnapshot"}``). Heartbeat comments keep proxies from closing
the stream.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, AsyncIterator

import anyio
from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Receive, Scope, Send

from . import snapshots
from .deps import FanoutDep, LayoutDep, MetricsDep, ReadableUser, RedisDep, SettingsDep
from .errors import InvalidRequest
from .fanout import Listener, Snapshot
from .metrics import Metrics
from .routes import ERRORS

router = APIRouter(tags=["status"], responses=ERRORS)
MAX_VERSION = 2**63 - 1


def parse_last_event_id(header: str | None, query: str | None) -> int | None:
    """The version the client already has (header first, then the query), or None."""
    raw = header if header not in (None, "") else query
    if raw in (None, ""):
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 19 or int(text) > MAX_VERSION:
        raise InvalidRequest("Last-Event-ID / lastEventId must be a snapshot version (a non-negative integer)")
    return int(text)


class StatusStream(EventSourceResponse):
    """An SSE response that always releases its listener and closes it on server shutdown."""

    def __init__(self, content: AsyncIterator[Any], listener: Listener, metrics: Metrics, **kwargs: Any) -> None:
        self.listener = listener
        self.metrics = metrics
        self.shutdown = anyio.Event()
        super().__init__(content, shutdown_event=self.shutdown, **kwargs)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def close_on_shutdown() -> None:
            await self.shutdown.wait()
            self.listener.close()  # the generator sees None, ends, and the response completes

        watcher = asyncio.create_task(close_on_shutdown())
        self.metrics.open_streams.inc()
        try:
            await super().__call__(scope, receive, send)
        finally:
            watcher.cancel()
            self.listener.close()
            self.metrics.open_streams.dec()


async def _events(
    first: Snapshot, listener: Listener, resumed_from: int | None, retry_ms: int, metrics: Metrics
) -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent(comment="livestatus", retry=retry_ms)
    # A client ahead of us holds a state from another history (the user's keys were rebuilt):
    # it gets the current snapshot too.
    send_first = resumed_from is None or first.version != resumed_from
    if resumed_from is not None:
        metrics.resumes.labels(caught_up="true" if send_first else "false").inc()
    if send_first:
        yield ServerSentEvent(data=first.json, event="snapshot", id=str(first.version))
        metrics.events_sent.inc()
    listener.sent_version = max(listener.sent_version, first.version)
    sync = {"version": first.version, "resumedFrom": resumed_from, "sentSnapshot": send_first}
    yield ServerSentEvent(data=json.dumps(sync), event="sync")
    while True:
        snapshot = await listener.next()
        if snapshot is None:
            return
        if snapshot.version <= listener.sent_version:
            continue  # read before the first snapshot was sent
        listener.sent_version = snapshot.version
        yield ServerSentEvent(data=snapshot.json, event="snapshot", id=str(snapshot.version))
        metrics.events_sent.inc()


@router.get(
    "/users/{masterAccountId}/status/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "a stream of snapshot events"}},
)
async def status_stream(
    uid: ReadableUser,
    redis: RedisDep,
    layout: LayoutDep,
    fanout: FanoutDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None,
    lastEventId: Annotated[str | None, Query(max_length=40, description="for clients that cannot set Last-Event-ID")] = None,  # noqa: N803
) -> StatusStream:
    """Server-Sent Events: the current snapshot, then one event per new version (resumable)."""
    resumed_from = parse_last_event_id(last_event_id, lastEventId)
    listener = fanout.listen(uid)  # before the read: a change right after it is not missed
    try:
        first = Snapshot(await snapshots.read(redis, layout, uid, settings.estimate_cap_percent))
    except BaseException:
        listener.close()
        raise
    return StatusStream(
        _events(first, listener, resumed_from, settings.retry_ms, metrics),
        listener,
        metrics,
        ping=settings.heartbeat_s,
        send_timeout=settings.send_timeout_s,
        shutdown_grace_period=settings.shutdown_grace_s,
        headers={"Cache-Control": "no-store"},
    )
