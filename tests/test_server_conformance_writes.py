"""The server's change events for renames, `$out` and multi-document transactions, as its own
tests state them. Fixtures and helpers: tests/server_conformance.py (which says how these run on
a real server).
"""

from __future__ import annotations

import pytest
from bson import Int64

from .server_conformance import DB, OTHER_DB, changes_until, client, db, get_more, next_change, open_cursor  # noqa: F401

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


@pytest.mark.parametrize("target_exists", [False, True])
def test_a_stream_on_the_target_of_a_rename_sees_the_rename_then_is_invalidated(db, target_exists):
    """jstests/change_streams/metadata_notifications.js: "with a change stream open on the
    target", with and without dropTarget of an existing target: rename, then invalidate."""
    db.source.insert_one({"_id": 1})
    if target_exists:
        db.target.insert_one({"_id": "old"})
    with db.target.watch(max_await_time_ms=100) as stream:
        db.source.rename("target", dropTarget=target_exists)
        rename, invalidate = next_change(stream), next_change(stream)
    assert rename["operationType"] == "rename"
    assert (rename["ns"], rename["to"]) == ({"db": DB, "coll": "source"}, {"db": DB, "coll": "target"})
    assert invalidate["operationType"] == "invalidate"


def test_out_into_a_collection_ends_that_collections_stream_after_the_rename(db):
    db.source.insert_one({"_id": 1})
    with db.target.watch(max_await_time_ms=100) as stream:
        list(db.source.aggregate([{"$out": "target"}]))
        rename, invalidate = next_change(stream), next_change(stream)
    assert rename["operationType"] == "rename" and rename["to"] == {"db": DB, "coll": "target"}
    assert invalidate["operationType"] == "invalidate"


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
