"""projector.source and projector.reading through the real pymongo driver against the stand-in."""

from __future__ import annotations

import time

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from projector.source import Source, connect, refuses_resume
from standin import StandIn

DB = "app"


def open_stream(mongo: StandIn, batch_size: int = 1000, max_await_ms: int = 100):
    client = connect(mongo.url)
    source = Source(client, DB, "generationOutputs", "userEconomy", batch_size=batch_size, max_await_ms=max_await_ms)
    return client, source.open()


def take_ids(stream, count: int, limit: int = 1000, timeout_s: float = 30.0) -> list:
    """Take until ``count`` events arrived (each take hands over what the reader read so far)."""
    ids: list = []
    deadline = time.monotonic() + timeout_s
    while len(ids) < count:
        assert time.monotonic() < deadline, f"only {ids} of {count} events within {timeout_s} s"
        taken = stream.take(limit, 1.0)
        assert len(taken.events) <= limit
        ids += [event["documentKey"]["_id"] for event in taken.events]
    return ids


def test_an_isolated_change_is_handed_over_when_its_getmore_returns_not_after_the_next_one(standin):
    """Whatever post-batch token came with it: on a real server it equals the event's _id when the
    event is the newest oplog entry (jstests/change_streams/report_post_batch_resume_token.js), so
    the projector must not wait for a token that differs. The reader's next getMore then waits out
    maxAwaitTimeMS (4 s here); the event must not wait for it."""
    client, stream = open_stream(standin, max_await_ms=4000)
    try:
        stream.begin()
        standin.insert(DB, "userEconomy", {"_id": 1, "masterAccountId": "u1", "usdCredit": "1"})
        started = time.monotonic()
        taken = stream.take(1000, 30.0)
        waited = time.monotonic() - started
        assert [e["documentKey"]["_id"] for e in taken.events] == [1]
        assert waited < 2.0, f"the event waited {waited:.1f} s: as long as an idle getMore"
        assert taken.token is not None
    finally:
        stream.close()
        client.close()


def test_batches_cut_by_their_size_are_all_handed_over_in_order(standin):
    client, stream = open_stream(standin, batch_size=2, max_await_ms=200)
    try:
        for i in range(5):
            standin.insert(DB, "userEconomy", {"_id": i, "masterAccountId": f"u{i}", "usdCredit": "1"})
        assert take_ids(stream, 5, limit=2) == [0, 1, 2, 3, 4]
    finally:
        stream.close()
        client.close()


def test_an_idle_take_is_caught_up_only_after_a_getmore_begun_after_it_and_the_token_advances(standin):
    client, stream = open_stream(standin, max_await_ms=50)
    try:
        standin.insert(DB, "userEconomy", {"_id": 1, "masterAccountId": "u1", "usdCredit": "1"})
        assert take_ids(stream, 1) == [1]
        token = stream.token
        taken = stream.take(1000, 30.0)
        assert taken.events == [] and taken.caught_up
        assert stream.token["_data"] >= token["_data"]
        # A write before the take is in it or the take is not caught up: never "caught up" without it.
        standin.insert(DB, "userEconomy", {"_id": 2, "masterAccountId": "u1", "usdCredit": "1"})
        taken = stream.take(1000, 30.0)
        assert [e["documentKey"]["_id"] for e in taken.events] == [2] or not taken.caught_up
    finally:
        stream.close()
        client.close()


def test_close_stops_the_reader_and_its_stream(standin):
    client, stream = open_stream(standin, max_await_ms=100)
    try:
        stream.begin()
        stream.take(1000, 1.0)
        stream.close()
        standin.insert(DB, "userEconomy", {"_id": 9, "masterAccountId": "u1", "usdCredit": "1"})
        assert stream.take(1000, 0.3).events == []  # nothing is read once closed
    finally:
        client.close()


@pytest.mark.parametrize("error, refused", [
    (OperationFailure("bad token", 9), True),  # FailedToParse (src/mongo/db/pipeline/resume_token.cpp)
    (OperationFailure("bad token", 40649), True),
    (OperationFailure("bad token", 50796), True),
    (OperationFailure("invalid", 260), True),
    (OperationFailure("not found", 280), True),
    (OperationFailure("history lost", 286), True),
    (OperationFailure("a code nobody knows today", 987654), True),
    (OperationFailure("stepped down", 10107), False),  # NotWritablePrimary
    (OperationFailure("interrupted", 11602), False),
    (OperationFailure("labelled", 1, {"errorLabels": ["ResumableChangeStreamError"]}), False),
    (AutoReconnect("network"), False),
])
def test_a_refusal_to_resume_is_told_from_a_transient_error(error, refused):
    assert refuses_resume(error) is refused
