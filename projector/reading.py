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
  variable; the reader appends, the builder takes. The reader hands over every event the driver
  already holds in one go (a run of up to a server batch), not one by one: the hand-off cost
  about 3 µs per event.
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


def _buffered(stream: Any) -> bool:
    """Whether the driver holds more events of the batch it read (the next ``try_next`` sends no
    ``getMore``): pymongo's own test before it takes a batch's post-batch token. False when the
    stream has no such cursor (then every event is handed over alone)."""
    has_next = getattr(getattr(stream, "_cursor", None), "_has_next", None)
    return bool(has_next()) if has_next is not None else False


@dataclass(frozen=True, slots=True)
class Read:
    """One result of the driver's reads: a run of events in stream order, or none when a
    ``getMore`` came back empty.

    ``token`` is the resume token covering everything read up to and including the last of them
    (after an empty ``getMore``: its post-batch token). ``since`` is when the first read began
    (``time.monotonic``).
    """

    events: list[Mapping[str, Any]]
    token: Mapping[str, Any] | None
    since: float

    def split(self, count: int) -> tuple[Read, Read]:
        """The first ``count`` events and the rest. The first part's token is its last event's
        ``_id``: the driver's token after an event that does not end a batch."""
        head = self.events[:count]
        return Read(head, head[-1]["_id"], self.since), Read(self.events[count:], self.token, self.since)


@dataclass(frozen=True, slots=True)
class Failed:
    """The driver's read raised: the stream is over (pymongo already retried what it resumes)."""

    error: BaseException


def _size(item: Read | Failed) -> int:
    return len(item.events) or 1 if isinstance(item, Read) else 1


class Inbox:
    """A bounded first-in first-out hand-off: the reader blocks while ``capacity`` events (an empty
    read or a failure counts as one) wait."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[Read | Failed] = deque()
        self._held = 0  # events (and empty reads, failures) in _items
        self._capacity = max(1, capacity)
        self._ready = threading.Condition()

    def put(self, item: Read | Failed, stop: threading.Event) -> bool:
        """Append ``item``; False (not appended) when ``stop`` is set while waiting for room."""
        with self._ready:
            while self._held >= self._capacity:
                if stop.is_set():
                    return False
                self._ready.wait(0.1)
            self._items.append(item)
            self._held += _size(item)
            self._ready.notify_all()
        return True

    def take(self, limit: int, timeout_s: float) -> list[Read | Failed]:
        """Items holding up to ``limit`` events (at least one item), oldest first: whatever is
        there, or the first to arrive within ``timeout_s`` (an empty list when none did). A run
        of events longer than what is left of ``limit`` is split."""
        with self._ready:
            if not self._items:
                self._ready.wait_for(lambda: self._items, timeout_s)
            taken: list[Read | Failed] = []
            room = max(1, limit)
            while self._items and room > 0:
                item = self._items.popleft()
                size = _size(item)
                if size > room:
                    assert isinstance(item, Read)  # only a run of events is bigger than one
                    item, rest = item.split(room)
                    self._items.appendleft(rest)
                    size = room
                taken.append(item)
                self._held -= size
                room -= size
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
                if not item.events:
                    caught_up = item.since >= began  # a getMore begun after this take saw nothing
                else:
                    events += item.events
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
                events = [] if event is None else [event]
                ends = event is not None and event.get("operationType") in RESYNC_EVENTS
                while not ends and events and _buffered(self._stream):  # no getMore: the batch in hand
                    event = self._stream.try_next()
                    if event is None:
                        break
                    events.append(event)
                    ends = event.get("operationType") in RESYNC_EVENTS
                if not self._inbox.put(Read(events, _token(self._stream), since), self._stop):
                    return
                if ends:
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
