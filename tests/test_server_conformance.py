"""Change-stream behaviours the projector relies on, each checked as the MongoDB server's own
tests and source state it (public repository mongodb/mongo, file named in each test).

They run against the stand-in, or unchanged against a real replica set when ``MONGO_TEST_URL``
is set (tests/mongo_target.py). Everything goes through pymongo: a test that needs a batch
boundary uses the raw ``aggregate``/``getMore`` commands. Where the server's files do not settle
a behaviour, the test says so instead of asserting it.
"""

from __future__ import annotations

import time

import pytest
from bson import Int64, Timestamp
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from standin import StandIn

from .mongo_target import mongo_target, target_url

DB = "livestatus_conformance"
OTHER_DB = "livestatus_conformance_other"
WAIT_S = 10.0


@pytest.fixture
def client():
    with mongo_target() as target:
        client = MongoClient(target.url, serverSelectionTimeoutMS=10_000)
        for name in (DB, OTHER_DB):
            client.drop_database(name)
        try:
            yield client
        finally:
            for name in (DB, OTHER_DB):
                client.drop_database(name)
            client.close()


@pytest.fixture
def db(client):
    return client[DB]


def next_change(stream) -> dict:
    """The next event, waiting for it (condition, not sleep)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        change = stream.try_next()
        if change is not None:
            return change
    raise AssertionError("no change arrived")


def changes_until(stream, last_id) -> list[dict]:
    """Events up to and including the insert of document ``last_id`` (a sentinel)."""
    changes = []
    while not changes or changes[-1].get("documentKey") != {"_id": last_id}:
        changes.append(next_change(stream))
    return changes


def open_cursor(db, coll, batch_size=0, **stage) -> int:
    """A change stream opened by a raw aggregate; its cursor id."""
    reply = db.command("aggregate", coll, pipeline=[{"$changeStream": stage}], cursor={"batchSize": batch_size})
    return reply["cursor"]["id"]


def get_more(db, coll, cursor_id, batch_size) -> tuple[list[dict], dict]:
    """One getMore's events and post-batch token, waiting for the first event."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        reply = db.command("getMore", cursor_id, collection=coll, batchSize=batch_size, maxTimeMS=500)["cursor"]
        if reply["nextBatch"]:
            return reply["nextBatch"], reply["postBatchResumeToken"]
    raise AssertionError("no batch arrived")


def token_time(token: dict) -> Timestamp:
    """The cluster time a resume token starts with (0x82, then 8 bytes: resume_token.cpp)."""
    data = token["_data"]
    assert data[:2] == "82"
    return Timestamp(int(data[2:10], 16), int(data[10:18], 16))


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
    deadline = time.monotonic() + WAIT_S
    while db.watched.count_documents({}) < 7 and time.monotonic() < deadline:
        pass
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


# ------------------------------------------------ renames
# jstests/change_streams/whole_db_metadata_notifications.js


def test_a_rename_with_drop_target_is_one_rename_event_and_no_drop(db):
    db.source.insert_one({"_id": "s"})
    db.target.insert_one({"_id": "t"})
    with db.watch(max_await_time_ms=100) as stream:
        db.source.rename("target", dropTarget=True)
        db.sentinel.insert_one({"_id": "end"})
        changes = changes_until(stream, "end")
    assert [c["operationType"] for c in changes] == ["rename", "insert"]
    assert changes[0]["ns"] == {"db": DB, "coll": "source"}
    assert changes[0]["to"] == {"db": DB, "coll": "target"}
    assert db.target.find_one() == {"_id": "s"}


def test_out_into_a_watched_collection_is_one_rename_event_to_it_and_no_drop(db):
    db.source.insert_many([{"_id": 1}, {"_id": 2}])
    db.target.insert_one({"_id": "old"})
    with db.watch(max_await_time_ms=100) as stream:
        list(db.source.aggregate([{"$match": {}}, {"$out": "target"}]))
        db.sentinel.insert_one({"_id": "end"})
        changes = changes_until(stream, "end")
    assert [c["operationType"] for c in changes] == ["rename", "insert"]
    # "$out will first create a temp collection, and then rename the temp collection to the
    # target. Do not explicitly check the 'ns' field."
    assert changes[0]["to"] == {"db": DB, "coll": "target"}
    assert changes[0]["ns"]["db"] == DB and changes[0]["ns"]["coll"] != "target"
    assert sorted(d["_id"] for d in db.target.find()) == [1, 2]


def test_a_rename_from_another_database_into_a_watched_one_is_a_rename_event_to_it(client, db):
    client[OTHER_DB].source.insert_one({"_id": 1})
    db.target.insert_one({"_id": "old"})
    with db.watch(max_await_time_ms=100) as stream:
        client.admin.command("renameCollection", f"{OTHER_DB}.source", to=f"{DB}.target", dropTarget=True)
        db.sentinel.insert_one({"_id": "end"})
        changes = changes_until(stream, "end")
    # "Do not check the 'ns' field since it will contain the namespace of the temp collection
    # created when renaming a collection across databases."
    assert [c["operationType"] for c in changes] == ["rename", "insert"]
    assert changes[0]["to"] == {"db": DB, "coll": "target"}
    assert db.target.find_one() == {"_id": 1}


def test_a_rename_into_another_database_is_a_drop_of_the_source(client, db):
    db.source.insert_one({"_id": 1})
    with db.watch(max_await_time_ms=100) as stream:
        client.admin.command("renameCollection", f"{DB}.source", to=f"{OTHER_DB}.target")
        db.sentinel.insert_one({"_id": "end"})
        changes = changes_until(stream, "end")
    # "Rename across databases drops the source collection after the collection is copied over."
    assert [(c["operationType"], c["ns"]) for c in changes[:-1]] == [("drop", {"db": DB, "coll": "source"})]


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


# ------------------------------------------------ multi-document transactions
# jstests/change_streams/apply_ops.js, jstests/noPassthrough/report_post_batch_resume_token_mongod.js


def test_a_transactions_events_share_cluster_time_lsid_and_txn_number_in_order(client, db):
    db.watched.insert_one({"_id": 0, "a": "before"})
    with db.watched.watch(max_await_time_ms=100) as stream:
        with client.start_session() as session, session.start_transaction():
            session_id = session.session_id["id"]
            db.watched.insert_one({"_id": 1, "a": 0}, session=session)
            db.watched.insert_one({"_id": 2, "a": 0}, session=session)
            db.unwatched.insert_one({"_id": 111}, session=session)
            db.watched.update_one({"_id": 1}, {"$inc": {"a": 1}}, session=session)
            db.watched.delete_one({"_id": 0}, session=session)
        changes = [next_change(stream) for _ in range(4)]
    assert [(c["operationType"], c["documentKey"]["_id"]) for c in changes] == [
        ("insert", 1), ("insert", 2), ("update", 1), ("delete", 0)]
    assert changes[2]["updateDescription"]["updatedFields"] == {"a": 1}
    assert len({c["clusterTime"] for c in changes}) == 1
    assert len({c["_id"]["_data"] for c in changes}) == 4
    assert [c["_id"]["_data"] for c in changes] == sorted(c["_id"]["_data"] for c in changes)
    assert all(c["lsid"]["id"] == session_id for c in changes)
    assert all(isinstance(c["txnNumber"], Int64) for c in changes) and len({c["txnNumber"] for c in changes}) == 1


def test_a_transaction_is_visible_all_at_once_at_commit_and_not_at_all_after_abort(client, db):
    with db.watched.watch(max_await_time_ms=100) as stream:
        with client.start_session() as session:
            session.start_transaction()
            db.watched.insert_one({"_id": 1}, session=session)
            db.watched.insert_one({"_id": 2}, session=session)
            assert db.watched.count_documents({}, session=session) == 2  # its own writes
            assert db.watched.count_documents({}) == 0  # nobody else's
            assert stream.try_next() is None
            session.commit_transaction()
            assert db.watched.count_documents({}) == 2
            session.start_transaction()
            db.watched.insert_one({"_id": 3}, session=session)
            session.abort_transaction()
        db.watched.insert_one({"_id": "end"})
        changes = changes_until(stream, "end")
    assert [c["documentKey"]["_id"] for c in changes] == [1, 2, "end"]
    assert db.watched.find_one({"_id": 3}) is None


def test_a_batch_boundary_inside_a_transaction_ends_on_the_last_events_token(client, db):
    """"The PBRT of the first transaction batch is equal to the last document's resumeToken" and,
    after the third event, stays equal to it: the unrelated fourth write has the same clusterTime."""
    cursor = open_cursor(db, "watched")
    with client.start_session() as session, session.start_transaction():
        for n in range(3):
            db.watched.insert_one({"_id": n}, session=session)
        db.unwatched.insert_one({"_id": 9}, session=session)
    first, first_token = get_more(db, "watched", cursor, 2)
    assert [e["documentKey"]["_id"] for e in first] == [0, 1] and first_token == first[-1]["_id"]
    third, third_token = get_more(db, "watched", cursor, 2)
    assert [e["documentKey"]["_id"] for e in third] == [2] and third_token == third[0]["_id"]
    with db.watched.watch(resume_after=first_token, max_await_time_ms=100) as resumed:
        assert next_change(resumed)["documentKey"] == {"_id": 2}


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
