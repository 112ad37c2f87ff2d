"""The stand-in's store, query and update logic, without the wire."""

from __future__ import annotations

import copy

import bson
import pytest
from bson import Decimal128, Int64, ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from standin import tokens
from standin.changestream import ChangeStreamCursor
from standin.errors import CommandError
from standin.projection import sort_documents
from standin.query import compile_filter
from standin.store import Store
from standin.update import apply_operators


def events_since(store: Store, cluster_time: int, **stage) -> list[dict]:
    """Every event after ``cluster_time``, rendered for a database-level stream on "app"."""
    cursor = ChangeStreamCursor(store, "app", None, {"resumeAfter": tokens.high_water_mark(cluster_time + 1), **stage}, None)
    events = []
    while batch := cursor.next_batch(1000, 0.0):
        events.extend(bson.decode(raw.raw) for raw in batch)
    return events


# ---------------------------------------------------------------- queries


@pytest.mark.parametrize(
    "filter_doc, matches",
    [
        ({"n": 1}, True),
        ({"n": 1.0}, True),
        ({"n": Int64(1)}, True),
        ({"n": Decimal128("1")}, True),
        ({"n": True}, False),
        ({"tags": "b"}, True),
        ({"tags": ["a", "b"]}, True),
        ({"sub.x": "y"}, True),
        ({"items.k": 2}, True),
        ({"missing": None}, True),
        ({"missing": {"$exists": False}}, True),
        ({"n": {"$ne": 2}}, True),
        ({"n": {"$in": [5, 1]}}, True),
        ({"n": {"$nin": [1]}}, False),
        ({"n": {"$gt": 0, "$lt": 2}}, True),
        ({"n": {"$gt": "0"}}, False),
        ({"$or": [{"n": 2}, {"sub.x": "y"}]}, True),
    ],
)
def test_filters_compare_values_like_mongodb(filter_doc, matches):
    doc = {"_id": 1, "n": 1, "tags": ["a", "b"], "sub": {"x": "y"}, "items": [{"k": 1}, {"k": 2}]}
    assert compile_filter(filter_doc)(doc) is matches


def test_sort_orders_by_bson_type_then_value():
    docs = [{"v": "a"}, {"v": 2}, {"v": None}, {"v": 1.5}, {"v": ObjectId("0" * 24)}, {}]
    ordered = sort_documents(docs, {"v": 1})
    assert [d.get("v", "missing") for d in ordered] == [None, "missing", 1.5, 2, "a", ObjectId("0" * 24)]


def test_unknown_query_operator_is_an_error():
    with pytest.raises(CommandError):
        compile_filter({"n": {"$where": "1"}})


# ---------------------------------------------------------------- updates


def test_updates_never_mutate_the_stored_document():
    old = {"_id": 1, "a": {"b": 1, "c": [1]}, "n": 1}
    frozen = copy.deepcopy(old)
    new, _ = apply_operators(old, {"$set": {"a.b": 2, "a.d.e": 3}, "$inc": {"n": 1}, "$unset": {"a.c": ""}})
    assert old == frozen
    assert new == {"_id": 1, "a": {"b": 2, "d": {"e": 3}}, "n": 2}


def test_update_description_lists_changed_and_removed_fields_only():
    _, description = apply_operators({"_id": 1, "a": 1, "b": 2}, {"$set": {"a": 1, "c": 3}, "$unset": {"b": "", "zz": ""}})
    assert description.as_event_field() == {"updatedFields": {"c": 3}, "removedFields": ["b"], "truncatedArrays": []}


@pytest.mark.parametrize(
    "start, amount, expected",
    [
        (1, 2, 3),
        (2**31 - 1, 1, Int64(2**31)),
        (Int64(1), 1, Int64(2)),
        (1, 0.5, 1.5),
        (Decimal128("1.10"), 1, Decimal128("2.10")),
    ],
)
def test_inc_promotes_numeric_types_like_mongodb(start, amount, expected):
    new, _ = apply_operators({"_id": 1, "v": start}, {"$inc": {"v": amount}})
    assert type(new["v"]) is type(expected) and new["v"] == expected


def test_inc_of_a_string_is_a_type_mismatch():
    with pytest.raises(CommandError) as error:
        apply_operators({"_id": 1, "v": "x"}, {"$inc": {"v": 1}})
    assert error.value.code == 14


def test_changing_the_id_is_refused():
    with pytest.raises(CommandError) as error:
        apply_operators({"_id": 1}, {"$set": {"_id": 2}})
    assert error.value.code == 66


# ---------------------------------------------------------------- oplog


def test_a_capped_oplog_loses_history_and_resuming_from_it_fails():
    store = Store(oplog_limit=10)
    start = store.cluster_time()
    for i in range(30):
        store.insert("app", "c", [{"_id": i}])
    with pytest.raises(CommandError) as error:
        events_since(store, start)
    assert error.value.code == 286
    assert [e["documentKey"]["_id"] for e in events_since(store, store.cluster_time() - 5)] == [25, 26, 27, 28, 29]


def test_cluster_time_is_strictly_increasing_even_within_one_second():
    store = Store(clock=lambda: 1_000.0)
    positions = []
    for i in range(5):
        store.insert("app", "c", [{"_id": i}])
        positions.append(store.cluster_time())
    assert positions == sorted(set(positions))
    assert tokens.to_timestamp(positions[0]).time == 1_000


writes = st.lists(
    st.tuples(
        st.sampled_from(["insert", "set", "unset", "inc", "replace", "delete"]),
        st.integers(0, 1),
        st.integers(-5, 5),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(writes)
def test_replaying_the_change_events_rebuilds_the_collection(ops):
    store = Store()
    start = store.cluster_time()
    for kind, key, value in ops:
        if kind == "insert":
            store.insert("app", "c", [{"_id": key, "v": value}])
        elif kind == "set":
            store.update("app", "c", [{"q": {"_id": key}, "u": {"$set": {f"f{value % 2}": value}}}])
        elif kind == "unset":
            store.update("app", "c", [{"q": {"_id": key}, "u": {"$unset": {f"f{value % 2}": ""}}}])
        elif kind == "inc":
            store.update("app", "c", [{"q": {"_id": key}, "u": {"$inc": {"v": value}}, "upsert": True}])
        elif kind == "replace":
            store.update("app", "c", [{"q": {"_id": key}, "u": {"w": value}}])
        else:
            store.delete("app", "c", [{"q": {"_id": key}, "limit": 1}])

    rebuilt: dict = {}
    for event in events_since(store, start):
        key = event["documentKey"]["_id"]
        if event["operationType"] in ("insert", "replace"):
            rebuilt[key] = event["fullDocument"]
        elif event["operationType"] == "update":
            doc = dict(rebuilt[key])
            doc.update(event["updateDescription"]["updatedFields"])
            for field in event["updateDescription"]["removedFields"]:
                del doc[field]
            rebuilt[key] = doc
        else:
            del rebuilt[key]
    assert rebuilt == {doc["_id"]: doc for doc in store.find("app", "c")}


# ---------------------------------------------------------------- resume tokens


token_data = st.builds(
    tokens.TokenData,
    cluster_time=st.integers(0, 2**64 - 1),
    token_type=st.sampled_from([tokens.EVENT, tokens.HIGH_WATER_MARK]),
    txn_op_index=st.integers(0, 2**20 - 1),
    from_invalidate=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(token_data, token_data)
def test_tokens_parse_back_and_their_hex_sorts_like_the_server_orders_them(a, b):
    assert tokens.parse(tokens.encode(a)) == a
    key = lambda t: (t.cluster_time, t.token_type, t.txn_op_index, t.from_invalidate)  # noqa: E731
    assert (tokens.encode(a)["_data"] < tokens.encode(b)["_data"]) == (key(a) < key(b))


def test_a_servers_version_2_token_with_a_uuid_and_an_event_identifier_parses():
    uuid = bytes(range(16))
    identifier = (
        "3C" + b"operationType\x00".hex() + "3C" + b"insert\x00".hex()
        + "46" + b"documentKey\x00".hex() + "46" + "64" + b"_id\x00".hex() + "64" + "AB" * 12 + "00"
        + "00"
    )
    data = "82" + "6B11000000000001" + "2B04" + "2C0100" + "29" + "6E" + "5A1004" + uuid.hex() + "46" + identifier + "04"
    parsed = tokens.parse({"_data": data.upper()})
    assert (parsed.version, parsed.token_type, parsed.uuid) == (2, tokens.EVENT, uuid)
    assert parsed.event_identifier == {"operationType": "insert", "documentKey": {"_id": bytes.fromhex("AB" * 12)}}
    # no stand-in event carries that UUID: a stream resumed from it swallows the events at its
    # cluster time that sort before it and fails on the first one past it
    event = tokens.TokenData(parsed.cluster_time)
    assert tokens.compare(event, parsed) == tokens.CHECK_NEXT
    assert tokens.compare(tokens.TokenData(parsed.cluster_time + 1), parsed) == tokens.SURPASSED
