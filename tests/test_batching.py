"""projector.batching: the one place events and scanned documents are sorted into a batch."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import Timestamp

from projector.batching import Batch, from_events
from projector.durations import Durations
from projector.normalize import Rules
from projector.projection import TASKS, Rejected, document_projection
from readmodel import FINISHED, LIVE, BalanceChange

KINDS = {"generationOutputs": TASKS, "userEconomy": "economy"}
STARTED = datetime(2026, 1, 1, tzinfo=UTC)


def task(gid: str, status: str, **fields) -> dict:
    return {"_id": gid, "masterAccountId": "u1", "status": status, "toolId": "flux",
            "requestTimestamp": STARTED, **fields}


def event(n: int, doc: dict | None, operation: str = "update", coll: str = "generationOutputs", **extra) -> dict:
    return {"_id": {"_data": f"82{n:08X}"}, "operationType": operation, "clusterTime": Timestamp(1_800_000_000, n),
            "ns": {"db": "app", "coll": coll}, "documentKey": {"_id": (doc or {}).get("_id", n)},
            "fullDocument": doc, **extra}


def test_a_finished_task_teaches_its_duration_and_is_applied_when_tailing_but_only_teaches_in_a_scan():
    done = task("g1", "completed", responseTimestamp=datetime(2026, 1, 1, 0, 2, tzinfo=UTC))
    tailing, scan = Batch(), Batch()
    for batch, finished in ((tailing, True), (scan, False)):
        durations = Durations()
        batch.add(document_projection(TASKS, done, "g1", "1.1", 0, Rules(), durations), durations, finished=finished)
        assert batch.learned == {"flux": 120_000}
    assert [c.state for c in tailing.changes] == [FINISHED]
    assert scan.changes == [] and scan  # nothing to apply but a duration to save


def test_rejected_documents_and_nothing_at_all_are_sorted_apart():
    batch, durations = Batch(), Durations()
    batch.add(document_projection(TASKS, {"_id": "bad", "status": 3}, "bad", "1.1", 0, Rules()), durations)
    batch.add((None, None), durations)
    assert [type(r) for r in batch.rejected] == [Rejected] and batch.changes == [] and batch


def test_events_are_built_up_to_the_one_that_ends_the_stream_and_a_learned_duration_serves_later_tasks():
    done = task("g1", "completed", responseTimestamp=datetime(2026, 1, 1, 0, 2, tzinfo=UTC))
    events = [
        event(1, done),
        event(2, task("g2", "processing")),
        event(3, {"_id": "e1", "masterAccountId": "u1", "usdCredit": "2"}, coll="userEconomy"),
        event(4, None, operation="rename", to={"db": "app", "coll": "generationOutputs"}, ns={"db": "app", "coll": "x"}),
        event(5, task("g3", "processing")),
    ]
    tailed = from_events(events, KINDS, Rules(), Durations(), owns=lambda _id: True)
    assert tailed.resync_reason == "rename event on x -> generationOutputs"
    assert tailed.batch.events == 5 and tailed.last_time == Timestamp(1_800_000_000, 3)
    states = [(getattr(c, "generation_id", None), getattr(c, "state", None)) for c in tailed.batch.changes]
    assert states == [("g1", FINISHED), ("g2", LIVE), (None, None)]
    assert isinstance(tailed.batch.changes[2], BalanceChange)
    assert '"expectedDurationMs":120000' in tailed.batch.changes[1].record.replace(" ", "")


def test_another_partitions_documents_are_read_and_counted_but_not_built():
    events = [event(1, task("mine", "processing")), event(2, task("theirs", "processing"))]
    tailed = from_events(events, KINDS, Rules(), Durations(), owns=lambda doc_id: doc_id == "mine")
    assert [c.generation_id for c in tailed.batch.changes] == ["mine"] and tailed.batch.events == 2
