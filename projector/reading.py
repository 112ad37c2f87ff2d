"""Reading the change stream: one thread blocked in the driver's read, handing what it reads over.

The server decides when a change may be applied, not a guess about the driver's buffer: a thread
of its own sits in pymongo's ``try_next`` (a ``getMore`` that waits up to ``maxAwaitTimeMS``) and
hands every event, and every ``getMore`` that came back empty, to the batch builder through an
:class:`Inbox`. The builder applies whatever has arrived when the inbox goes quiet, in order. An
isolated change is therefore applied as soon as its ``getMore`` returns, whatever post-batch
resume token came with it: on a real server that token equals the event's ``_id`` when the event
is the newest oplog entry (``jstests/change_streams/report_post_batch_resume_token.js``), so the
token cannot tell "the driver holds nothing more".

Who owns what:

- The reader thread owns the pymongo change stream and its session from :meth:`Stream.start`
  until it exits, and closes them itself. Before ``start()`` they belong to the thread that opened
  them (the resync reads ``token`` then); ``Thread.start`` is the hand-off.
- :class:`Inbox` is the only thing both threads touch: a bounded FIFO under one condition
  variable; the reader appends, the builder takes.
- ``Stream.token``, ``Stream.start`` and ``Stream._failure`` belong to the builder's thread (the
  worker's).
- ``Stream._stop`` is a ``threading.Event``: set by the builder's thread, read by the reader.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from pymongo.errors import PyMongoError

log = logging.getLogger(__name__)

# Events after which the collections may hold anything: rebuild instead of guessing. The reader
# stops after one (the builder resyncs).
RESYNC_EVENTS = frozenset({"invalidate", "drop", "dropDatabase", "rename"})
CLOSE_WAIT_S = 5.0  # a read in flight returns within maxAwaitTimeMS on a healthy server


def _token(stream: Any) -> Mapping[str, Any] | None:
    """The stream's resume token without ``resume_token``'s deep copy (a few µs per event):
    pymongo replaces its ``_resume_token`` (an event's ``_id`` or a post-batch token) and never
    changes it in place, and nobody here changes a token either."""
    token = getattr(stream, "_resume_token", _NO_TOKEN)
    return stream.resume_token if token is _NO_TOKEN else cast("Mapping[str, Any] | None", token)


_NO_TOKEN = object()


@dataclass(frozen=True, slots=True)
class Read:
    """One result of the driver's read: an event, or None when a ``getMore`` came back empty.

    ``token`` is the resume token covering everything read up to and including this (after an
    empty ``getMore``: its post-batch token). ``since`` is when the read began (``time.monotonic``).
    """

    event: Mapping[str, Any] | None
    token: Mapping[str, Any] | None
    since: float


@dataclass(frozen=True, slots=True)
class Failed:
    """The driver's read raised: the stream is over (pymongo already retried what it resumes)."""

    error: BaseException


class Inbox:
    """A bounded first-in first-out hand-off: the reader blocks when ``capacity`` items wait."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[Read | Failed] = deque()
        self._capacity = max(1, capacity)
        self._ready = threading.Condition()

    def put(self, item: Read | Failed, stop: threading.Event) -> bool:
        """Append ``item``; False (not appended) when ``stop`` is set while waiting for room."""
        with self._ready:
            while len(self._items) >= self._capacity:
                if stop.is_set():
                    return False
                self._ready.wait(0.1)
            self._items.append(item)
            self._ready.notify_all()
        return True

    def take(self, limit: int, timeout_s: float) -> list[Read | Failed]:
        """Up to ``limit`` items, oldest first: whatever is there, or the first to arrive within
        ``timeout_s`` (an empty list when none did)."""
        with self._ready:
            if not self._items:
                self._ready.wait_for(lambda: self._items, timeout_s)
            taken = [self._items.popleft() for _ in range(min(limit, len(self._items)))]
            if taken:
                self._ready.notify_all()  # room for the reader
            return taken


@dataclass
class Taken:
    """What the builder took in one go: events in stream order, the token covering them, whether
    a ``getMore`` that began after the take came back empty (caught up), and whether the last
    event ends the stream."""

    events: list[Mapping[str, Any]]
    token: Mapping[str, Any] | None
    caught_up: bool


class Stream:
    """An open change stream, the position it started at, and (once started) its reader thread."""

    def __init__(self, stream: Any, session: Any, start: str, capacity: int = 2000) -> None:
        self._stream = stream
        self._session = session
        self.start = start  # position this stream starts from
        self.token: Mapping[str, Any] | None = stream.resume_token  # covers everything taken so far
        self._inbox = Inbox(capacity)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None  # the builder's: what ended the stream

    def begin(self) -> None:
        """Start the reader thread (the stream and session are its own from now on)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._read, name="projector-stream-reader", daemon=True)
            self._thread.start()

    def take(self, limit: int, wait_s: float) -> Taken:
        """Whatever the reader handed over, up to ``limit`` events, waiting up to ``wait_s`` for
        something when nothing is there. Raises the error that ended the stream, once the events
        read before it were handed over."""
        self.begin()
        if self._failure is not None:
            raise self._failure
        began = time.monotonic()
        deadline = began + wait_s
        events: list[Mapping[str, Any]] = []
        caught_up = False
        while True:
            for item in self._inbox.take(limit - len(events) or 1, max(0.0, deadline - time.monotonic())):
                if isinstance(item, Failed):
                    if not events:
                        raise item.error
                    self._failure = item.error  # raised by the next take, after these are applied
                    return Taken(events, self.token, False)
                self.token = item.token
                if item.event is None:
                    caught_up = item.since >= began  # a getMore begun after this take saw nothing
                else:
                    events.append(item.event)
                    caught_up = False
            if events or caught_up or time.monotonic() >= deadline:
                return Taken(events, self.token, caught_up)

    def close(self) -> None:
        """Stop reading; the reader closes the stream once its read in flight returns."""
        self._stop.set()
        if self._thread is None:
            self._close_driver()
        elif self._thread is not threading.current_thread():
            self._thread.join(CLOSE_WAIT_S)
            if self._thread.is_alive():
                log.warning("the change stream's read did not return within %.0f s; leaving it to close itself",
                            CLOSE_WAIT_S)

    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                since = time.monotonic()
                event = self._stream.try_next()
                if event is None and not self._stream.alive:
                    raise PyMongoError("the server closed the change stream")
                if not self._inbox.put(Read(event, _token(self._stream), since), self._stop):
                    return
                if event is not None and event.get("operationType") in RESYNC_EVENTS:
                    return  # the builder resyncs; nothing after this event is wanted
        except BaseException as exc:
            self._inbox.put(Failed(exc), self._stop)
        finally:
            self._close_driver()

    def _close_driver(self) -> None:
        try:
            self._stream.close()
        except PyMongoError:
            pass
        try:
            self._session.end_session()
        except PyMongoError:
            pass
