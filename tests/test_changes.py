"""Events to changes: which events of a batch a later one of the same document supersedes."""

from __future__ import annotations

from bson import ObjectId, Timestamp

from projector.changes import superseded

KINDS = {"generationOutputs": "tasks", "userEconomy": "economy"}


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
    assert superseded(events, KINDS) == {0, 1}


def test_unreadable_ids_other_collections_and_non_document_events_are_never_skipped():
    events = [
        event("update", "generationOutputs", {"nested": 1}),
        event("update", "generationOutputs", {"nested": 1}),
        event("update", "generationOutputs", None),
        event("update", "generationOutputs", None),
        event("update", "prompts", "g1"),
        event("update", "prompts", "g1"),
        {"operationType": "invalidate"},
        {"operationType": "invalidate"},
        {"operationType": "update"},  # no ns, no documentKey: projected on its own (and rejected)
        {"operationType": "update"},
    ]
    assert superseded(events, KINDS) == set()
