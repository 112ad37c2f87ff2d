"""projector.reading: the reader thread and its hand-off, over a scripted change stream.

The stand-in (tests/test_source.py) shows it through pymongo; here a script plays what a server
may do that the stand-in does not, e.g. a mongos answering a getMore with an empty batch while a
shard still has events (the driver change streams spec's tests README allows it).
"""

from __future__ import annotations

import threading
import time
from collections import deque

import pytest
from pymongo.errors import OperationFailure

from projector.reading import Inbox, Read, Stream


def event(n: int, operation: str = "insert") -> dict:
    return {"_id": {"_data": f"82{n:08X}"}, "operationType": operation, "documentKey": {"_id": n}}


class ScriptedStream:
    """pymongo's ChangeStream as the reader uses it: ``try_next``, ``resume_token``, ``alive``,
    ``close``. Each script item is an event, None (an empty getMore with a post-batch token), or
    an exception; once the script is done every read is an empty getMore."""

    def __init__(self, script: list) -> None:
        self.script = deque(script)
        self.resume_token = {"_data": "8200000000"}
        self.alive = True
        self.closed = threading.Event()
        self.reads = 0

    def try_next(self):
        self.reads += 1
        if not self.script:
            time.sleep(0.005)  # an idle getMore's maxAwaitTimeMS, shortened
            return None
        item = self.script.popleft()
        if isinstance(item, BaseException):
            raise item
        if item is None:
            return None
        self.resume_token = item["_id"]
        return item

    def close(self) -> None:
        self.closed.set()


class Session:
    def end_session(self) -> None:
        pass


def take_all(stream: Stream, count: int, timeout_s: float = 10.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        assert time.monotonic() < deadline, f"got {got}"
        got += [e["documentKey"]["_id"] for e in stream.take(1000, 0.5).events]
    return got


def test_an_empty_getmore_while_events_exist_neither_stalls_nor_loses_them():
    """mongos may answer a getMore with nothing while a shard has events: the next read brings
    them, at once, in order; the empty one is only a caught-up signal, never a reason to wait."""
    scripted = ScriptedStream([None, event(1), None, None, event(2), event(3)])
    stream = Stream(scripted, Session(), "1.0", capacity=10)
    try:
        assert take_all(stream, 3) == [1, 2, 3]
        assert stream.token == event(3)["_id"]  # the token covers exactly what was handed over
    finally:
        stream.close()
    assert scripted.closed.is_set()


def test_the_error_that_ends_the_stream_is_raised_where_batches_are_built_after_the_events_before_it():
    refusal = OperationFailure("history lost", 286)
    scripted = ScriptedStream([event(1), refusal])
    stream = Stream(scripted, Session(), "1.0", capacity=10)
    try:
        assert take_all(stream, 1) == [1]
        with pytest.raises(OperationFailure, match="history lost"):
            stream.take(1000, 5.0)
    finally:
        stream.close()
    assert scripted.closed.is_set()  # the reader closed the driver's stream itself


def test_the_reader_stops_after_an_event_that_ends_the_stream():
    scripted = ScriptedStream([event(1), event(2, "rename"), event(3)])
    stream = Stream(scripted, Session(), "1.0", capacity=10)
    try:
        assert take_all(stream, 2) == [1, 2]
        assert scripted.closed.wait(5)
        assert stream.take(1000, 0.05).events == []  # event 3 was never read
    finally:
        stream.close()


def test_a_full_inbox_holds_the_reader_back_and_close_still_returns():
    scripted = ScriptedStream([event(n) for n in range(100)])
    stream = Stream(scripted, Session(), "1.0", capacity=5)
    stream.begin()
    deadline = time.monotonic() + 5
    while scripted.reads < 6 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)  # would the reader run past the capacity, it would have by now
    assert scripted.reads <= 6  # five waiting and the one it holds
    assert [e["documentKey"]["_id"] for e in stream.take(3, 1.0).events] == [0, 1, 2]
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 5 and scripted.closed.is_set()


def test_take_hands_over_at_most_limit_items_oldest_first():
    inbox = Inbox(10)
    stop = threading.Event()
    for n in range(4):
        assert inbox.put(Read([event(n)], None, 0.0), stop)
    assert [r.events[0]["documentKey"]["_id"] for r in inbox.take(3, 0.0)] == [0, 1, 2]
    assert [r.events[0]["documentKey"]["_id"] for r in inbox.take(3, 0.0)] == [3]
    assert inbox.take(3, 0.01) == []


def test_a_run_of_events_longer_than_the_limit_is_split_and_its_first_part_covered_by_its_last_id():
    inbox = Inbox(10)
    stop = threading.Event()
    post_batch = {"_data": "82FFFFFFFF"}
    assert inbox.put(Read([event(n) for n in range(5)], post_batch, 0.0), stop)
    first = inbox.take(3, 0.0)
    assert [[e["documentKey"]["_id"] for e in r.events] for r in first] == [[0, 1, 2]]
    assert first[0].token == event(2)["_id"]
    rest = inbox.take(3, 0.0)
    assert [[e["documentKey"]["_id"] for e in r.events] for r in rest] == [[3, 4]]
    assert rest[0].token == post_batch


class Batched(ScriptedStream):
    """A driver that read its events in server batches: ``_cursor._has_next()`` tells whether the
    batch in hand holds more (lists in the script are batches)."""

    def __init__(self, batches: list) -> None:
        super().__init__([e for batch in batches for e in batch])
        self.left = deque(len(batch) for batch in batches)
        self.in_hand = 0  # events of the batch the last getMore brought, not read yet
        self._cursor = self
        self.post_batch = {"_data": "82EEEEEEEE"}

    def _has_next(self) -> bool:
        return self.in_hand > 0

    def try_next(self):
        if not self.in_hand and self.left:
            self.in_hand = self.left.popleft()  # a getMore
        found = super().try_next()
        if found is not None:
            self.in_hand -= 1
            if not self.in_hand:
                self.resume_token = self.post_batch  # pymongo: the batch's post-batch token
        return found


def test_the_events_the_driver_holds_are_handed_over_as_one_run_covered_by_the_last_token():
    scripted = Batched([[event(n) for n in range(4)], [event(4), event(5, "drop"), event(6)]])
    inbox = Inbox(100)
    stream = Stream(scripted, Session(), "1.0", capacity=100)
    stream._inbox = inbox
    try:
        stream.begin()
        assert scripted.closed.wait(5)  # the reader stopped after the drop
        reads = inbox.take(100, 1.0)
        assert [[e["documentKey"]["_id"] for e in r.events] for r in reads] == [[0, 1, 2, 3], [4, 5]]
        assert reads[0].token == scripted.post_batch and reads[1].token == event(5)["_id"]
        assert scripted.reads == 6  # event 6 was never read
    finally:
        stream.close()
