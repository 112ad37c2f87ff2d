"""Dead letters: rejected documents land in a bounded Redis stream with reason and raw document."""

from bson import Decimal128, ObjectId

from projector.deadletters import DeadLetters, encode_document
from projector.projection import ECONOMY, TASKS, Rejected

COLLECTIONS = {TASKS: "generationOutputs", ECONOMY: "userEconomy"}


def test_rejected_document_is_readable_with_collection_id_reason_and_document(any_redis, layout):
    dead = DeadLetters(any_redis, layout)
    doc = {"_id": ObjectId("65f1aaaaaaaaaaaaaaaaaaaa"), "status": 7, "costUsd": Decimal128("1.5")}
    assert dead.add([Rejected(TASKS, "65f1aaaaaaaaaaaaaaaaaaaa", "missing or non-text status: 7", doc)],
                   COLLECTIONS, "2026-11-25T09:00:00.000Z") == 1
    [entry] = dead.recent()
    assert entry["collection"] == "generationOutputs"
    assert entry["id"] == "65f1aaaaaaaaaaaaaaaaaaaa"
    assert entry["reason"] == "missing or non-text status: 7"
    assert '"$oid": "65f1aaaaaaaaaaaaaaaaaaaa"' in entry["document"]
    assert entry["at"] == "2026-11-25T09:00:00.000Z"


def test_dead_letters_are_listed_newest_first_and_limited(any_redis, layout):
    dead = DeadLetters(any_redis, layout)
    for i in range(5):
        dead.add([Rejected(ECONOMY, f"e{i}", "bad", {})], COLLECTIONS, "t")
    assert [e["id"] for e in dead.recent(limit=2)] == ["e4", "e3"]
    assert dead.total() == 5


def test_stream_is_trimmed_to_about_its_maximum_length(real_redis, layout):
    dead = DeadLetters(real_redis, layout, maxlen=100)
    for _ in range(5):
        dead.add([Rejected(ECONOMY, "e", "bad", {}) for _ in range(100)], COLLECTIONS, "t")
    assert dead.total() < 300


def test_huge_document_is_cut_to_a_few_kilobytes():
    text = encode_document({"blob": "x" * 100_000})
    assert len(text) <= 4096 and text.endswith("…")
