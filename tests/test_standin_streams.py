"""The stand-in's change streams, exercised through the real pymongo driver (what the server
itself guarantees is in tests/test_server_conformance*.py)."""

from __future__ import annotations

import pytest
from pymongo import DeleteOne, InsertOne, ReplaceOne, UpdateOne
from pymongo.errors import OperationFailure

from .test_standin import DB, WATCHED, client, db, drain, mongo, next_change, watch  # noqa: F401


def test_watch_sees_new_changes_but_nothing_written_before_it_opened(mongo, db):
    db.generationOutputs.insert_one({"_id": "old"})
    with watch(db) as stream:
        assert stream.try_next() is None
        db.generationOutputs.insert_one({"_id": "new"})
        change = next_change(stream)
    assert change["operationType"] == "insert"
    assert change["documentKey"] == {"_id": "new"}
    assert change["ns"] == {"db": DB, "coll": "generationOutputs"}
    assert change["fullDocument"] == {"_id": "new"}


def test_the_match_stage_keeps_unwatched_collections_out(mongo, db):
    with watch(db) as stream:
        mongo.insert(DB, "sessions", {"_id": 1})
        mongo.insert(DB, "userEconomy", {"_id": 2})
        assert [c["ns"]["coll"] for c in drain(stream)] == ["userEconomy"]


@pytest.mark.parametrize(
    "match, expected",
    [
        ({"ns.coll": "userEconomy"}, [("insert", 1), ("update", 1), ("delete", 1)]),
        ({"operationType": {"$in": ["insert", "delete"]}}, [("insert", 1), ("insert", 2), ("delete", 1)]),
        ({"ns.coll": {"$in": WATCHED}, "operationType": "update"}, [("update", 1)]),
    ],
)
def test_match_stages_filter_on_namespace_and_operation_type(mongo, db, match, expected):
    with db.watch([{"$match": match}], max_await_time_ms=100) as stream:
        mongo.insert(DB, "userEconomy", {"_id": 1})
        mongo.insert(DB, "sessions", {"_id": 2})
        mongo.update(DB, "userEconomy", 1, set={"a": 1})
        mongo.delete(DB, "userEconomy", 1)
        assert [(c["operationType"], c["documentKey"]["_id"]) for c in drain(stream)] == expected


def test_writes_through_pymongo_produce_the_matching_events(db):
    with watch(db) as stream:
        db.generationOutputs.insert_many([{"_id": 1, "s": "queued"}, {"_id": 2, "s": "queued"}])
        db.generationOutputs.update_one({"_id": 1}, {"$set": {"s": "done"}, "$unset": {"x": ""}})
        db.generationOutputs.replace_one({"_id": 2}, {"s": "replaced"})
        db.generationOutputs.bulk_write(
            [InsertOne({"_id": 3}), UpdateOne({"_id": 3}, {"$inc": {"n": 1}}), ReplaceOne({"_id": 3}, {"n": 9}),
             DeleteOne({"_id": 1})]
        )
        db.generationOutputs.delete_one({"_id": 2})
        changes = drain(stream)
    assert [(c["operationType"], c["documentKey"]["_id"]) for c in changes] == [
        ("insert", 1), ("insert", 2), ("update", 1), ("replace", 2),
        ("insert", 3), ("update", 3), ("replace", 3), ("delete", 1), ("delete", 2),
    ]  # fmt: skip
    update = changes[2]
    assert update["updateDescription"] == {"updatedFields": {"s": "done"}, "removedFields": [], "truncatedArrays": []}


def test_resume_tokens_sort_in_event_order(mongo, db):
    with watch(db) as stream:
        for i in range(300):
            mongo.insert(DB, "userEconomy", {"_id": i})
        tokens = [c["_id"]["_data"] for c in drain(stream)]
    assert len(tokens) == 300
    assert tokens == sorted(tokens) and len(set(tokens)) == 300


def test_resume_after_continues_exactly_after_the_token(mongo, db):
    with watch(db) as stream:
        for i in range(5):
            mongo.insert(DB, "userEconomy", {"_id": i})
        changes = drain(stream)
    with watch(db, resume_after=changes[1]["_id"]) as resumed:
        assert [c["documentKey"]["_id"] for c in drain(resumed)] == [2, 3, 4]


def test_start_at_operation_time_includes_the_event_at_that_time(mongo, db):
    with watch(db) as stream:
        for i in range(3):
            mongo.insert(DB, "userEconomy", {"_id": i})
        changes = drain(stream)
    with watch(db, start_at_operation_time=changes[1]["clusterTime"]) as resumed:
        assert [c["documentKey"]["_id"] for c in drain(resumed)] == [1, 2]


def test_start_at_the_first_operation_time_sees_every_write(mongo, client, db):
    start = client.admin.command("ping")["operationTime"]  # before any write
    mongo.insert(DB, "userEconomy", {"_id": 1})
    with watch(db, start_at_operation_time=start) as stream:
        assert [c["documentKey"]["_id"] for c in drain(stream)] == [1]


def test_post_batch_resume_token_advances_on_idle_getmore(mongo, db):
    with watch(db) as stream:
        assert stream.try_next() is None
        before = stream.resume_token
        # The first write may land at the stream's start time (one tick after the last write),
        # where the high-water mark it started with already stands; the second is past it.
        mongo.insert(DB, "unwatched", {"_id": 1})
        mongo.insert(DB, "unwatched", {"_id": 2})
        assert stream.try_next() is None
        after = stream.resume_token
    assert after["_data"] > before["_data"]
    # and resuming from it skips the unwatched write without losing anything after it
    mongo.insert(DB, "userEconomy", {"_id": "next"})
    with watch(db, resume_after=after) as resumed:
        assert [c["documentKey"]["_id"] for c in drain(resumed)] == ["next"]


def test_update_lookup_returns_null_once_the_document_is_deleted(mongo, db):
    mongo.insert(DB, "generationOutputs", {"_id": "g1", "s": "queued"})
    with watch(db) as stream:
        mongo.update(DB, "generationOutputs", "g1", set={"s": "done"})
        mongo.delete(DB, "generationOutputs", "g1")
        update, delete = drain(stream)
    assert update["operationType"] == "update"
    assert update["fullDocument"] is None
    assert delete["operationType"] == "delete"


def test_update_lookup_shows_the_current_document_not_the_one_at_event_time(mongo, db):
    mongo.insert(DB, "generationOutputs", {"_id": "g1", "s": "queued"})
    with watch(db) as stream:
        mongo.update(DB, "generationOutputs", "g1", set={"s": "running"})
        mongo.update(DB, "generationOutputs", "g1", set={"s": "done"})
        first, _second = drain(stream)
    assert first["updateDescription"]["updatedFields"] == {"s": "running"}
    assert first["fullDocument"]["s"] == "done"


def test_resuming_after_truncated_history_fails_with_code_286(mongo, db):
    with watch(db) as stream:
        mongo.insert(DB, "userEconomy", {"_id": 1})
        token = next_change(stream)["_id"]
    mongo.insert(DB, "userEconomy", {"_id": 2})
    mongo.truncate_history()
    with pytest.raises(OperationFailure) as failure:
        watch(db, resume_after=token)
    assert failure.value.code == 286
    assert failure.value.has_error_label("NonResumableChangeStreamError")


def test_an_open_stream_behind_a_truncation_fails_with_code_286(mongo, db):
    with watch(db) as stream:
        assert stream.try_next() is None
        mongo.insert(DB, "userEconomy", {"_id": 1})  # forgotten before the stream reads it
        mongo.truncate_history()
        with pytest.raises(OperationFailure) as failure:
            stream.try_next()
    assert failure.value.code == 286


@pytest.mark.parametrize("code", [91, 10107, 43])
def test_resumable_getmore_error_is_resumed_by_pymongo_without_losing_events(mongo, db, code):
    with watch(db) as stream:
        mongo.insert(DB, "userEconomy", {"_id": 1})
        next_change(stream)
        token = stream.resume_token  # the batch's high-water mark, cached by pymongo with its last event
        mongo.fail_next("getMore", code=code)
        mongo.insert(DB, "userEconomy", {"_id": 2})
        mongo.insert(DB, "userEconomy", {"_id": 3})
        changes = drain(stream)
    assert mongo.pending_faults() == 0
    assert [c["documentKey"]["_id"] for c in changes] == [2, 3]
    assert mongo.change_stream_opens[-1].resume_after == token


def test_dropped_connection_is_resumed_by_pymongo_without_losing_events(mongo, db):
    with watch(db) as stream:
        mongo.insert(DB, "userEconomy", {"_id": 1})
        next_change(stream)
        token = stream.resume_token  # the batch's high-water mark, cached by pymongo with its last event
        mongo.hangup_next("getMore")
        mongo.insert(DB, "userEconomy", {"_id": 2})
        changes = drain(stream)
    assert mongo.pending_faults() == 0
    assert [c["documentKey"]["_id"] for c in changes] == [2]
    assert len(mongo.change_stream_opens) == 2
    assert mongo.change_stream_opens[-1].resume_after == token


def test_a_fault_can_be_narrowed_to_change_stream_getmores(mongo, db):
    db.userEconomy.insert_many([{"_id": i} for i in range(10)])
    mongo.fail_next("getMore", code=43, when=lambda command: command["collection"] == "$cmd.aggregate")
    assert len(list(db.userEconomy.find(batch_size=3))) == 10  # its getMores are not failed
    assert mongo.pending_faults() == 1


def test_retryable_write_error_is_retried_by_pymongo(mongo, db):
    mongo.fail_next("insert", code=91)
    db.userEconomy.insert_one({"_id": "once"})
    assert mongo.pending_faults() == 0
    assert mongo.count(DB, "userEconomy") == 1


def test_invalidate_ends_the_stream_with_an_invalidate_event(mongo, db):
    with watch(db) as stream:
        mongo.insert(DB, "userEconomy", {"_id": 1})
        mongo.invalidate(DB)
        changes = drain(stream)
        assert not stream.alive
    assert [c["operationType"] for c in changes] == ["insert", "invalidate"]
    with pytest.raises(OperationFailure) as failure:
        watch(db, resume_after=changes[-1]["_id"])
    assert failure.value.code == 260
    mongo.insert(DB, "userEconomy", {"_id": 2})
    with watch(db, start_after=changes[-1]["_id"]) as restarted:
        assert [c["documentKey"]["_id"] for c in drain(restarted)] == [2]


def test_dropping_a_collection_invalidates_its_collection_stream(mongo, db):
    mongo.insert(DB, "userEconomy", {"_id": 1})
    with db.userEconomy.watch(max_await_time_ms=100) as stream:
        db.userEconomy.drop()
        assert [c["operationType"] for c in drain(stream)] == ["drop", "invalidate"]


def test_an_inclusion_project_stage_trims_events_but_keeps_the_resume_token(mongo, db):
    pipeline = [{"$match": {"ns.coll": "generationOutputs"}},
                {"$project": {"operationType": 1, "documentKey": 1, "fullDocument.status": 1,
                              "fullDocument.metadata.progress": 1}}]
    with db.watch(pipeline, max_await_time_ms=100) as stream:
        mongo.insert(DB, "generationOutputs", {"_id": 1, "status": "pending", "prompt": "x" * 500,
                                               "metadata": {"progress": 0.5, "seed": 7}})
        change = next_change(stream)
        # the event's own token; pymongo caches the batch's high-water mark, at or after it
        assert change["_id"]["_data"] <= stream.resume_token["_data"]
    assert change["fullDocument"] == {"status": "pending", "metadata": {"progress": 0.5}}  # nested _id is not implied
    assert set(change) == {"_id", "operationType", "documentKey", "fullDocument"}


def test_an_exclusion_project_stage_drops_fields_and_keeps_the_resume_token(mongo, db):
    with db.watch([{"$project": {"fullDocument.prompt": 0, "wallTime": 0}}], max_await_time_ms=100) as stream:
        mongo.insert(DB, "generationOutputs", {"_id": 1, "status": "pending", "prompt": "x" * 500})
        change = next_change(stream)
        # the event's own token is kept; pymongo caches the drained batch's high-water mark after it
        assert change["_id"]["_data"] <= stream.resume_token["_data"]
    assert change["fullDocument"] == {"_id": 1, "status": "pending"}
    assert "wallTime" not in change and "clusterTime" in change


def test_a_pipeline_that_drops_the_resume_token_fails_the_stream_without_resuming(mongo, db):
    with db.watch([{"$project": {"_id": 0}}], max_await_time_ms=100) as stream:
        mongo.insert(DB, "generationOutputs", {"_id": 1})
        with pytest.raises(OperationFailure) as failure:
            next_change(stream)
    assert failure.value.code == 280
    assert failure.value.has_error_label("NonResumableChangeStreamError")
    assert len(mongo.change_stream_opens) == 1  # not resumed


def test_computed_project_fields_are_evaluated_against_the_event(mongo, db):
    pipeline = [{"$project": {"kind": "$operationType", "ns.db": 1, "tag": {"$literal": "$x"}, "n": "fixed"}}]
    with db.watch(pipeline, max_await_time_ms=100) as stream:
        mongo.insert(DB, "generationOutputs", {"_id": 1})
        change = next_change(stream)
    assert change == {"_id": change["_id"], "ns": {"db": DB}, "kind": "insert", "tag": "$x", "n": "fixed"}


def test_mixing_exclusion_with_inclusion_is_refused(db):
    with pytest.raises(OperationFailure) as failure:
        db.watch([{"$project": {"fullDocument.prompt": 0, "operationType": 1}}]).close()
    assert failure.value.code == 31254


def test_a_batch_ends_on_its_last_event_token_until_the_oplog_moves_past_it(mongo, db):
    """As on a real server (jstests/change_streams/report_post_batch_resume_token.js): a batch's
    post-batch token is its last event's ``_id`` when it stopped at ``batchSize`` and also when that
    event is the newest oplog entry; it becomes a later high-water mark only once the oplog has
    moved past it. (This test asserted a distinct high-water mark for every drained batch before:
    that was the old stand-in, not the server.)"""
    with watch(db, batch_size=2) as stream:
        assert stream.try_next() is None
        for i in range(3):
            mongo.insert(DB, "userEconomy", {"_id": i})
        first = stream.try_next()
        assert stream.resume_token == first["_id"]  # not the batch's last event
        second = stream.try_next()
        assert stream.resume_token == second["_id"]  # last of a full batch
        third = stream.try_next()
        assert stream.resume_token == third["_id"]  # the newest oplog entry
        assert stream.try_next() is None
        assert stream.resume_token == third["_id"]  # nothing moved
        mongo.insert(DB, "unwatched", {"_id": 1})
        assert stream.try_next() is None
        assert stream.resume_token["_data"] > third["_id"]["_data"]  # a high-water mark past it
