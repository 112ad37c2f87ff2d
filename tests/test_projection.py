"""Events to changes: which events of a batch a later one of the same document supersedes."""

from __future__ import annotations

from bson import ObjectId, Timestamp

from projector.projection import superseded


def event(operation, coll, doc_id, n=1):
    return {"operationType": operation, "ns": {"db": "app", "coll": coll}, "documentKey": {"_id": doc_id},
            "clusterTime": Timestamp(1_795_000_000, n)}


def test_only_the_last_event_of_each_document_in_a_batch_is_kept():
    oid = ObjectId()
    events = [
        event("insert", "generationOutputs", "g1"),  # 0: superseded by 4
        event("update", "generationOutputs", oid),  # 1: superseded by 3
        event("update", "userEconomy", "g1"),  # 2: the same id in the other collection: kept
        event("update", "generationOutputs", oid),  # 3
        event("delete", "generationOutputs", "g1"),  # 4
        event("update", "generationOutputs", "g2"),  # 5
    ]
    assert superseded(events) == {0, 1}


def test_unhashable_ids_ids_of_other_types_and_events_without_a_document_are_never_skipped():
    events = [
        event("update", "generationOutputs", {"nested": 1}),
        event("update", "generationOutputs", {"nested": 1}),
        event("update", "generationOutputs", [1, 2]),
        event("update", "generationOutputs", [1, 2]),
        event("update", "generationOutputs", True),  # equal to 1 in Python, another document in MongoDB
        event("update", "generationOutputs", 1),
        {"operationType": "invalidate"},
        {"operationType": "invalidate"},
        {"operationType": "drop", "ns": {"db": "app", "coll": "generationOutputs"}},
        {"operationType": "drop", "ns": {"db": "app", "coll": "generationOutputs"}},
        {"operationType": "update"},  # no ns, no documentKey: projected on its own (and rejected)
        {"operationType": "update"},
    ]
    assert superseded(events) == set()
