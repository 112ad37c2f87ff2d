"""The MongoDB stand-in, exercised through the real pymongo driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from bson import Decimal128, Int64, ObjectId
from pymongo import MongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure

from standin import StandIn

DB = "app"
WATCHED = ["generationOutputs", "userEconomy"]
MATCH = [{"$match": {"ns.coll": {"$in": WATCHED}}}]


@pytest.fixture
def mongo():
    with StandIn() as stand_in:
        yield stand_in


@pytest.fixture
def client(mongo):
    client = MongoClient(mongo.url, serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture
def db(client):
    return client[DB]


def watch(db, **kwargs):
    kwargs.setdefault("max_await_time_ms", 100)
    return db.watch(MATCH, full_document="updateLookup", **kwargs)


def next_change(stream, attempts=50):
    for _ in range(attempts):
        change = stream.try_next()
        if change is not None:
            return change
    raise AssertionError("no change arrived")


def drain(stream, attempts=3):
    """Changes until ``attempts`` consecutive empty getMores."""
    changes, empty = [], 0
    while empty < attempts:
        change = stream.try_next()
        if change is None:
            empty += 1
        else:
            changes.append(change)
            empty = 0
    return changes


# ---------------------------------------------------------------- basics


def test_handshake_advertises_a_replica_set_primary_with_sessions(client):
    hello = client.admin.command("hello")
    assert hello["isWritablePrimary"] is True
    assert hello["setName"] == "rs0"
    assert hello["maxWireVersion"] >= 17
    assert hello["logicalSessionTimeoutMinutes"] > 0
    assert "operationTime" in hello and "$clusterTime" in hello


def test_bson_types_survive_a_round_trip_through_pymongo(mongo, db):
    doc = {
        "_id": ObjectId(),
        "credits": Decimal128("10.25"),
        "big": Int64(2**40),
        "at": datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
        "nested": {"list": [1, "two", None]},
    }
    db.generationOutputs.insert_one(doc)
    found = db.generationOutputs.find_one({"_id": doc["_id"]})
    assert found["credits"] == Decimal128("10.25")
    assert isinstance(found["big"], Int64) and found["big"] == 2**40
    assert found["at"] == datetime(2026, 1, 2, 3, 4, 5, 6000)
    assert found["nested"] == {"list": [1, "two", None]}
    assert mongo.get(DB, "generationOutputs", doc["_id"])["credits"] == Decimal128("10.25")


def test_inc_of_decimal128_is_exact(mongo, db):
    db.userEconomy.insert_one({"_id": "u1", "balance": Decimal128("0.1")})
    db.userEconomy.update_one({"_id": "u1"}, {"$inc": {"balance": Decimal128("0.2")}})
    mongo.update(DB, "userEconomy", "u1", inc={"balance": Decimal128("-0.0000000000000000000000000000001")})
    balance = db.userEconomy.find_one({"_id": "u1"})["balance"]
    assert balance.to_decimal() == Decimal("0.2999999999999999999999999999999")


def test_find_returns_more_than_one_batch_in_order(mongo, db):
    db.generationOutputs.insert_many([{"_id": i, "n": i} for i in range(1500)])
    docs = list(db.generationOutputs.find({}, batch_size=400).sort("_id", 1))
    assert [d["_id"] for d in docs] == list(range(1500))
    assert mongo.command_count("getMore") == 3


def test_find_filters_by_equality_and_in(db):
    db.userEconomy.insert_many([{"_id": i, "tier": "gold" if i % 3 == 0 else "free"} for i in range(30)])
    assert len(list(db.userEconomy.find({"tier": "gold"}))) == 10
    assert [d["_id"] for d in db.userEconomy.find({"_id": {"$in": [4, 2, 99]}}).sort("_id", 1)] == [2, 4]


def test_count_and_estimated_count_agree_with_the_store(mongo, db):
    db.userEconomy.insert_many([{"_id": i, "even": i % 2 == 0} for i in range(25)])
    assert db.userEconomy.estimated_document_count() == 25
    assert db.userEconomy.count_documents({"even": True}) == 13
    assert mongo.count(DB, "userEconomy") == 25


def test_duplicate_id_is_a_duplicate_key_error(db):
    db.userEconomy.insert_one({"_id": "u1"})
    with pytest.raises(DuplicateKeyError):
        db.userEconomy.insert_one({"_id": "u1"})


def test_upsert_inserts_a_document_built_from_the_filter(db):
    result = db.userEconomy.update_one({"_id": "u9"}, {"$set": {"credits": 5}}, upsert=True)
    assert result.upserted_id == "u9"
    assert db.userEconomy.find_one({"_id": "u9"}) == {"_id": "u9", "credits": 5}


@pytest.mark.timeout(10)
def test_a_waiting_getmore_does_not_block_another_clients_writes(mongo, client):
    writer = MongoClient(mongo.url, serverSelectionTimeoutMS=5000)
    try:
        with client[DB].watch(MATCH, max_await_time_ms=60_000) as stream:
            waiting = threading.Thread(target=stream.try_next)
            waiting.start()
            while mongo.command_count("getMore") == 0:
                time.sleep(0.01)  # its getMore now waits up to 60 s for an event
            writer[DB].unwatched.insert_one({"_id": 1})
            assert writer[DB].unwatched.count_documents({}) == 1
            writer[DB].userEconomy.insert_one({"_id": 2})  # wakes the getMore
            waiting.join()
    finally:
        writer.close()


@pytest.mark.timeout(5)
def test_stop_is_quick_with_a_getmore_waiting():
    stand_in = StandIn().start()
    client = MongoClient(stand_in.url, serverSelectionTimeoutMS=300)  # its resume attempt gives up fast
    try:
        stream = client[DB].watch(MATCH, max_await_time_ms=60_000)
        outcome = []
        waiting = threading.Thread(target=lambda: outcome.append(_outcome(stream.try_next)))
        waiting.start()
        while stand_in.command_count("getMore") == 0:
            time.sleep(0.01)
        stand_in.stop()
        stand_in.stop()  # idempotent
        waiting.join()
        assert outcome == ["failed"]  # the waiting getMore is interrupted, not left hanging
    finally:
        client.close()


def _outcome(call):
    try:
        call()
    except Exception:
        return "failed"
    return "returned"


@pytest.mark.timeout(15)
def test_runs_as_a_process_until_sigterm(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "standin", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        line = process.stdout.readline()
        url = line.split()[line.split().index("serving") + 1]
        with MongoClient(url, serverSelectionTimeoutMS=5000) as client:
            assert client.admin.command("ping")["ok"] == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
        process.stdout.close()


def test_find_by_in_matches_embedded_document_and_number_ids(db):
    db.t.insert_many([{"_id": {"nested": "a"}}, {"_id": 1.5}, {"_id": "s"}])
    found = db.t.find({"_id": {"$in": [{"nested": "a"}, 1.5, "missing"]}})
    assert sorted(map(repr, (d["_id"] for d in found))) == ["1.5", "{'nested': 'a'}"]


def test_stopping_right_after_starting_leaves_no_failed_thread(monkeypatch):
    failures = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    for _ in range(100):
        with StandIn():
            pass
    assert failures == []


def test_find_one_and_update_returns_the_document_before_or_after_and_is_one_change_event(db):
    db.userEconomy.insert_many([{"_id": "a", "exp": 1, "rank": 2}, {"_id": "b", "exp": 1, "rank": 1}])
    with db.watch(max_await_time_ms=100, full_document="updateLookup") as stream:
        before = db.userEconomy.find_one_and_update({"exp": 1}, {"$inc": {"exp": 5}}, sort=[("rank", 1)])
        after = db.userEconomy.find_one_and_update({"_id": "a"}, {"$inc": {"exp": 5}}, projection={"exp": 1},
                                                   return_document=ReturnDocument.AFTER)
        change = next_change(stream)
    assert before == {"_id": "b", "exp": 1, "rank": 1}  # the first in sort order, as it was
    assert after == {"_id": "a", "exp": 6}
    assert change["operationType"] == "update" and change["fullDocument"] == {"_id": "b", "exp": 6, "rank": 1}


def test_find_one_and_update_upserts_and_find_one_and_delete_removes(db):
    upserted = db.userEconomy.find_one_and_update({"_id": "new"}, {"$set": {"exp": 1}}, upsert=True,
                                                  return_document=ReturnDocument.AFTER)
    assert upserted == {"_id": "new", "exp": 1}
    assert db.userEconomy.find_one_and_update({"_id": "missing"}, {"$set": {"exp": 1}}) is None
    assert db.userEconomy.find_one_and_delete({"_id": "new"}) == {"_id": "new", "exp": 1}
    assert db.userEconomy.count_documents({}) == 0


def test_distinct_unwinds_arrays_and_treats_equal_numbers_as_one(db):
    db.t.insert_many([{"s": "done"}, {"s": ["queued", "done"]}, {"s": 1}, {"s": 1.0}, {"x": 0}])
    assert db.t.distinct("s") == [1, "done", "queued"]
    assert db.t.distinct("s", {"s": "queued"}) == ["done", "queued"]


def test_sample_picks_that_many_distinct_documents_and_checks_its_argument_as_the_server_does(db):
    """$sample as `projector verify --sample` sends it (src/mongo/db/pipeline/document_source_sample.cpp:
    a non-negative number of documents, all of them when fewer; codes 28745-28749)."""
    db.t.insert_many([{"_id": i, "owner": f"u{i % 3}", "big": "x" * 10} for i in range(20)])
    picked = list(db.t.aggregate([{"$sample": {"size": 5}}, {"$project": {"owner": 1}}]))
    assert len(picked) == len({d["_id"] for d in picked}) == 5
    assert all(set(d) == {"_id", "owner"} and d["owner"] == f"u{d['_id'] % 3}" for d in picked)
    assert sorted(d["_id"] for d in db.t.aggregate([{"$sample": {"size": 50}}])) == list(range(20))
    draws = {tuple(sorted(d["_id"] for d in db.t.aggregate([{"$sample": {"size": 3}}]))) for _ in range(10)}
    assert len(draws) > 1  # random: ten draws of 3 among 20 are not all the same
    for spec, code in (({"size": -1}, 28747), ({"size": "5"}, 28746), ({}, 28749), ({"size": 1, "x": 1}, 28748),
                       (5, 28745)):
        with pytest.raises(OperationFailure) as failure:
            list(db.t.aggregate([{"$sample": spec}]))
        assert failure.value.code == code
