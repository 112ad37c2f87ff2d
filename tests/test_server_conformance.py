"""The server's change-stream positions, as its own tests and source state them: post-batch
resume tokens, batches, where a new stream starts, which resume tokens it refuses and how.
Fixtures and helpers: tests/server_conformance.py (which says how these run on a real server).
"""

from __future__ import annotations

import time

import pytest
from bson import Timestamp
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from standin import StandIn

from .mongo_target import target_url
from .server_conformance import DB, WAIT_S, client, db, get_more, next_change, open_cursor, token_time  # noqa: F401

# ------------------------------------------------ post-batch resume token
# jstests/change_streams/report_post_batch_resume_token.js and
# src/mongo/db/query/plan_executor_pipeline.cpp (_performChangeStreamsAccounting)


def test_the_token_after_an_event_that_is_the_newest_oplog_entry_is_that_events_id(db):
    with db.watched.watch(max_await_time_ms=100) as stream:
        db.watched.insert_one({"_id": 1})
        change = next_change(stream)
        # "Because the retrieved event is the most recent entry in the oplog, the PBRT should be
        # equal to the resume token of the last item in the batch"
        assert stream.resume_token == change["_id"]


def test_the_token_becomes_a_high_water_mark_only_once_the_oplog_moved_past_the_event(db):
    with db.watched.watch(max_await_time_ms=100) as stream:
        db.watched.insert_one({"_id": 1})
        event = next_change(stream)
        db.unrelated.insert_one({"_id": 1})  # a later oplog entry this stream does not show
        deadline = time.monotonic() + WAIT_S
        while stream.resume_token == event["_id"] and time.monotonic() < deadline:
            assert stream.try_next() is None
        high_water_mark = stream.resume_token
    assert high_water_mark["_data"] > event["_id"]["_data"]
    db.watched.insert_one({"_id": 2})
    with db.watched.watch(resume_after=high_water_mark, max_await_time_ms=100) as resumed:
        assert next_change(resumed)["documentKey"] == {"_id": 2}  # and not the unrelated write


def test_an_idle_streams_token_advances_only_when_the_oplog_does(client, db):
    with db.watched.watch(max_await_time_ms=100) as stream:
        assert stream.try_next() is None
        before, operation_time = stream.resume_token, client.admin.command("ping")["operationTime"]
        assert stream.try_next() is None
        if client.admin.command("ping")["operationTime"] == operation_time:  # no oplog entry meanwhile
            assert stream.resume_token == before
        for n in range(2):  # the first may land at the stream's start time, where its token stands
            db.unrelated.insert_one({"_id": n})
        deadline = time.monotonic() + WAIT_S
        while stream.resume_token == before and time.monotonic() < deadline:
            assert stream.try_next() is None
        assert stream.resume_token["_data"] > before["_data"]


def test_a_resumed_streams_first_token_is_the_token_it_resumed_from(db):
    """"the PBRT for a resumed stream is the given resume token if no result are returned"."""
    with db.watched.watch(max_await_time_ms=100) as stream:
        db.watched.insert_many([{"_id": 1}, {"_id": 2}])
        first = next_change(stream)
    reply = db.command("aggregate", "watched", pipeline=[{"$changeStream": {"resumeAfter": first["_id"]}}],
                       cursor={"batchSize": 0})
    assert reply["cursor"]["firstBatch"] == [] and reply["cursor"]["postBatchResumeToken"] == first["_id"]


def test_a_stream_starting_in_the_future_keeps_its_first_token_while_the_oplog_moves(db):
    """"the PBRT does not advance beyond its initial value for a change stream whose
    startAtOperationTime is in the future, even as writes are made to the test collection"."""
    with db.watched.watch(start_at_operation_time=Timestamp(4102444800, 1), max_await_time_ms=100) as stream:
        initial = stream.resume_token
        for n in range(3):
            assert stream.try_next() is None
            assert stream.resume_token == initial
            db.watched.insert_one({"_id": n})


def test_the_stand_in_writes_the_servers_periodic_no_op_into_an_idle_oplog():
    """A replica-set primary writes a no-op into an idle oplog every periodicNoopIntervalSecs (a
    startup parameter, 10 s by default), which is what advances an idle stream's token. Checked on
    the stand-in only: a real server's interval is not set by a test."""
    if target_url():
        pytest.skip("the periodic no-op interval of a running server is not a test's to set")
    with StandIn(noop_interval=0.2) as mongo, MongoClient(mongo.url) as client:
        with client[DB].watched.watch(max_await_time_ms=100) as stream:
            assert stream.try_next() is None
            before = stream.resume_token
            deadline = time.monotonic() + WAIT_S
            while stream.resume_token == before and time.monotonic() < deadline:
                assert stream.try_next() is None
            assert stream.resume_token["_data"] > before["_data"]


def test_a_batch_fills_to_batch_size_and_ends_on_its_last_events_token(db):
    cursor = open_cursor(db, "watched")
    db.watched.insert_many([{"_id": n} for n in range(7)])
    first, first_token = get_more(db, "watched", cursor, 3)
    assert [e["documentKey"]["_id"] for e in first] == [0, 1, 2]
    assert first_token == first[-1]["_id"]  # stopped at batchSize: the server holds more
    rest, rest_token = get_more(db, "watched", cursor, 100)
    assert [e["documentKey"]["_id"] for e in rest] == [3, 4, 5, 6]  # every event already there
    assert rest_token == rest[-1]["_id"]  # the newest oplog entry


def test_a_batch_stops_before_16_mb(db):
    """"the batch hits the byte size limit ... we should only see 1 result, because the second
    result cannot fit in the batch" (report_post_batch_resume_token.js, with two 16 MB documents;
    two of 9 MB here)."""
    cursor = open_cursor(db, "watched")
    for n in range(2):
        db.watched.insert_one({"_id": n, "padding": "a" * (9 * 1024 * 1024)})
    first, first_token = get_more(db, "watched", cursor, 10)
    assert [e["documentKey"]["_id"] for e in first] == [0]
    assert first_token == first[0]["_id"]
    second, _ = get_more(db, "watched", cursor, 10)
    assert [e["documentKey"]["_id"] for e in second] == [1]


# ------------------------------------------------ where a new stream starts
# src/mongo/db/pipeline/document_source_change_stream.cpp (getStartTimeForNewStream: addTicks(1))


def test_a_new_stream_starts_one_tick_after_the_last_applied_write(client, db):
    for _ in range(5):  # retried only if another oplog entry (a periodic no-op) came in between
        with client.start_session() as session:
            db.watched.insert_one({"_id": time.monotonic_ns()}, session=session)
            written = session.operation_time
        with db.watched.watch(max_await_time_ms=100) as stream:
            start = stream.resume_token  # the first batch is empty: its post-batch token
            if client.admin.command("ping")["operationTime"] != written:
                continue
            assert token_time(start) == Timestamp(written.time, written.inc + 1)
            db.watched.insert_one({"_id": "after"})
            assert next_change(stream)["documentKey"] == {"_id": "after"}  # and not the write before
            return
    pytest.fail("the oplog never stayed still long enough to compare")


# ------------------------------------------------ resume tokens the server cannot parse
# src/mongo/db/pipeline/resume_token.cpp (ResumeToken::ResumeToken, ResumeToken::getData)

TS = "820000000100000000"  # KeyString: a Timestamp(1, 0)


@pytest.mark.parametrize(
    "token, code",
    [
        ({"_data": "not-a-token"}, 9),  # FailedToParse: "resume token string was not a valid hex string"
        ({"_data": "zz"}, 9),
        ({"_data": 12}, 40647),  # "_data of missing or of wrong type"
        ({"_data": f"{TS}2B0604"}, 50795),  # version 3: "only supports version 0, 1 and 2"
        ({"_data": f"{TS}2B022B0A04"}, 51057),  # tokenType 5: "Token type 5 not recognized"
        ({"_data": f"{TS}2B022C010027FD6E04"}, 50794),  # txnOpIndex -1: "should be non-negative"
        ({"_data": f"{TS}2B042C0100296E04"}, 6189500),  # version 2 without a UUID (or null): "Expected UUID or null"
    ],
)
def test_a_token_the_server_cannot_parse_is_refused_with_its_parse_error(db, token, code):
    """Never InvalidResumeToken (260), ChangeStreamFatalError (280) or HistoryLost (286). Not
    settled by the server's files, so not asserted: the code for bytes its KeyString decoder
    cannot read (key_string.cpp's own assertions; the stand-in answers 9) and for a UUID element
    that is not a UUID."""
    with pytest.raises(OperationFailure) as failure:
        with db.watch(resume_after=token, max_await_time_ms=100) as stream:
            stream.try_next()
    assert failure.value.code == code
    assert failure.value.code not in (260, 280, 286)


# ------------------------------------------------ a resume token that names no event of this stream
# src/mongo/db/pipeline/document_source_change_stream_ensure_resume_token_present.cpp,
# jstests/change_streams/filter_excludes_resume_point.js


def test_a_filter_that_excludes_the_resume_point_fails_with_280(db):
    with db.watched.watch(max_await_time_ms=100) as stream:
        db.watched.insert_many([{"_id": 1}, {"_id": 2}])
        first = next_change(stream)
    with pytest.raises(OperationFailure) as failure:
        with db.watched.watch([{"$match": {"fullDocument._id": {"$gt": 1}}}], resume_after=first["_id"],
                              max_await_time_ms=100) as resumed:
            next_change(resumed)
    assert failure.value.code == 280
    assert "resume token was not found" in str(failure.value)


def test_a_token_of_another_collections_event_fails_with_280_once_this_stream_passes_it(db):
    with db.elsewhere.watch(max_await_time_ms=100) as stream:
        db.elsewhere.insert_one({"_id": 1})
        foreign = next_change(stream)["_id"]
    db.watched.insert_one({"_id": 1})
    with pytest.raises(OperationFailure) as failure:
        with db.watched.watch(resume_after=foreign, max_await_time_ms=100) as resumed:
            next_change(resumed)
    assert failure.value.code == 280


def test_resuming_from_an_events_token_continues_right_after_it(db):
    with db.watched.watch(max_await_time_ms=100) as stream:
        db.watched.insert_many([{"_id": n} for n in range(3)])
        first = next_change(stream)
    with db.watched.watch(resume_after=first["_id"], max_await_time_ms=100) as resumed:
        assert [next_change(resumed)["documentKey"]["_id"] for _ in range(2)] == [1, 2]
