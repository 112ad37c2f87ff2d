"""The live chat text: one user's status message for one platform, as Server-Sent Events, paced
for a bot that edits one message in place.

``GET /users/{id}/status/text/stream?platform=telegram|discord[&markup=markdownv2][&intervalS=S]``
sends ``event: text`` (``id:`` = version; data: the rendered message, as ``/status/text`` serves
it) whenever the rendered text changes, at most one event per ``intervalS`` (default and minimum
``TEXT_STREAM_INTERVAL_S``, 3 s: under Telegram's edit rate). Changes that come faster are
coalesced, never queued: the stream's mailbox keeps only the newest snapshot, and the event sent
when the interval allows is rendered from it, so the latest state is always delivered. Once no
task is live (the last one finished, or none was live when the stream opened) it sends
``event: final`` with the message as it is then, and the stream ends. Elapsed times, estimates and
stalled flags change without a new version: the snapshot is read again every
``REFRESH_INTERVALS`` intervals while tasks are live. Every event fits the platform's limit
(:func:`api.render.render`).

The stream holds a slot like every stream (per user, per credential, per process) and ends with
the token that opened it. The body generator (one per stream, its own task) owns every variable
it uses; the mailbox is the only thing it shares, with the fan-out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sse_starlette import EventSourceResponse, JSONServerSentEvent, ServerSentEvent

from .deps import FanoutDep, MarkupQuery, MetricsDep, PlatformQuery, ReadableUser, ReaderDep, SettingsDep, StreamGateDep
from .errors import InvalidRequest
from .limits import LIMIT_ERRORS
from .mailbox import Mailbox
from .metrics import Metrics
from .render import DISCORD_ALLOWED_MENTIONS, Markup, markup_for, render
from .routes import ERRORS
from .settings import Settings
from .stream import PING, EndsOnShutdown, StatusStream

router = APIRouter(tags=["status"], responses={**ERRORS, **LIMIT_ERRORS})
REFRESH_INTERVALS = 5  # while tasks are live, the snapshot is read again this many intervals after the last read
MAX_INTERVAL_S = 300.0


def live_count(snapshot: dict[str, Any]) -> int:
    return len(snapshot["liveTasks"]) + snapshot.get("liveTasksOmitted", 0)


def text_event(snapshot: dict[str, Any], text: str, platform: str, markup: Markup, final: bool) -> bytes:
    data = {
        "masterAccountId": snapshot["masterAccountId"],
        "version": snapshot["version"],
        "platform": platform,
        "parseMode": markup.parse_mode,
        "allowedMentions": DISCORD_ALLOWED_MENTIONS if platform == "discord" else None,
        "text": text,
        "liveTasks": live_count(snapshot),
        "final": final,
    }
    return JSONServerSentEvent(data, id=str(snapshot["version"]), event="final" if final else "text").encode()


async def text_frames(
    first: dict[str, Any],
    mailbox: Mailbox,
    reread: Callable[[], Awaitable[dict[str, Any]]],
    text_of: Callable[[dict[str, Any]], str],
    encode: Callable[[dict[str, Any], str, bool], bytes],
    interval_s: float,
    heartbeat_s: float,
    retry_ms: int,
    metrics: Metrics | None = None,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[bytes]:
    """The stream's body (see the module docstring); ``clock`` is a monotonic clock in seconds."""
    clock = clock or asyncio.get_running_loop().time
    yield ServerSentEvent(comment="livestatus", retry=retry_ms).encode()
    state, sent_text = first, None
    next_send = clock()
    next_refresh = clock() + REFRESH_INTERVALS * interval_s
    quiet_since = clock()
    while True:
        if live_count(state) == 0 or text_of(state) != sent_text:
            while (now := clock()) < next_send:  # paced: take newer states while waiting, send the newest
                if await mailbox.wait(next_send - now) and not mailbox.closed:
                    newer = mailbox.take()
                    state = newer.data if newer is not None else state
                if mailbox.closed:
                    break
            if mailbox.closed:
                if mailbox.farewell:
                    yield mailbox.farewell
                return
            text, final = text_of(state), live_count(state) == 0
            yield encode(state, text, final)
            if metrics is not None:
                metrics.events_sent.inc()
            if final:
                return
            sent_text, now = text, clock()
            next_send, quiet_since = now + interval_s, now
            continue
        now = clock()
        woken = await mailbox.wait(max(0.0, min(next_refresh, quiet_since + heartbeat_s) - now))
        if mailbox.closed:
            if mailbox.farewell:
                yield mailbox.farewell
            return
        newer = mailbox.take() if woken else None
        if newer is not None:
            state = newer.data
        elif clock() >= next_refresh:
            state = await reread()
            next_refresh = clock() + REFRESH_INTERVALS * interval_s
        elif clock() >= quiet_since + heartbeat_s:
            yield PING
            quiet_since = clock()


class TextStream(StatusStream):
    """A :class:`StatusStream` (slot, handoff, shutdown, open-stream gauge) with the text body."""

    def __init__(self, body: AsyncIterator[bytes], mailbox: Mailbox, metrics: Metrics, settings: Settings) -> None:
        EventSourceResponse.__init__(
            self,
            body,
            ping=0,  # the body sends the heartbeats
            send_timeout=settings.send_timeout_s,
            shutdown_event=EndsOnShutdown(mailbox),  # type: ignore[arg-type]  # only set() is called
            shutdown_grace_period=settings.shutdown_grace_s,
        )
        self.mailbox = mailbox
        self.metrics = metrics


@router.get(
    "/users/{masterAccountId}/status/text/stream",
    response_class=EventSourceResponse,
    status_code=200,
    operation_id="streamStatusText",
    responses={200: {"content": {"text/event-stream": {}}, "description":
                     "`event: text` (the message, at most one per interval, the newest state), then `event: final` "
                     "when no task is live; data as /status/text plus `liveTasks` (a count) and `final`"}},
)
async def status_text_stream(
    uid: ReadableUser,
    fanout: FanoutDep,
    reader: ReaderDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    gate: StreamGateDep,
    platform: PlatformQuery,
    markup: MarkupQuery = None,
    intervalS: Annotated[float | None, Query(
        gt=0, le=MAX_INTERVAL_S, description="at least this long between events (default and minimum: "
        "TEXT_STREAM_INTERVAL_S, 3 s)")] = None,
) -> StatusStream:
    """The user's status message for one chat platform, re-sent when it changes (paced, coalesced) until no
    task is live; made for editing one message in place."""
    interval_s = settings.text_stream_interval_s if intervalS is None else intervalS
    if interval_s < settings.text_stream_interval_s:
        raise InvalidRequest(f"intervalS must be at least {settings.text_stream_interval_s:g} (TEXT_STREAM_INTERVAL_S)")
    chosen = markup_for(platform, markup)
    mailbox, first = await gate.open(fanout)  # 429/503 past a limit
    mailbox.mark_sent(first.version)

    async def reread() -> dict[str, Any]:
        return (await fanout.first_snapshot(uid)).data

    def text_of(snapshot: dict[str, Any]) -> str:
        return render(snapshot, chosen, reader.clock(), settings.text_task_limit)

    def encode(snapshot: dict[str, Any], text: str, final: bool) -> bytes:
        return text_event(snapshot, text, platform, chosen, final)

    body = text_frames(first.data, mailbox, reread, text_of, encode, interval_s, settings.heartbeat_s,
                       settings.retry_ms, metrics)
    return TextStream(body, mailbox, metrics, settings)
