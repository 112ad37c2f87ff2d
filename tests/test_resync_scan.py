"""The resync's scan reads only what normalization reads, and a document it rejects is
dead-lettered whole."""

from __future__ import annotations

import pytest
from pymongo import MongoClient

from projector.deadletters import DeadLetters
from projector.normalize import Rules
from projector.projection import TASKS as TASKS_KIND
from projector.settings import Settings
from projector.source import Source
from projector.worker import Worker
from readmodel.settings import StoreSettings

from .capture_helpers import DB, ECONOMY, TASKS, economy_doc, settle, snapshot, task_doc

pytestmark = pytest.mark.both_backends


def test_the_scan_reads_trimmed_documents_with_their_embedded_fields(standin):
    standin.insert(DB, TASKS, task_doc("g1", "u1", prompt="p" * 1000, metadata={"progress": 0.5, "seed": 7}))
    with MongoClient(standin.url, serverSelectionTimeoutMS=3000) as mongo:
        [[doc]] = list(Source(mongo, DB, TASKS, ECONOMY).scan_ahead(TASKS_KIND))
    assert doc["_id"] == "g1" and doc["masterAccountId"] == "u1" and doc["status"] == "processing"
    assert doc["metadata"] == {"progress": 0.5}  # the dotted path kept, its siblings not
    assert "prompt" not in doc


def test_a_resync_dead_letters_a_rejected_document_whole_and_projects_the_rest(standin, real_redis, prefix, layout,
                                                                                backend):
    standin.insert(DB, TASKS, task_doc("bad", "u1", status=42, prompt="a lighthouse at dusk"))
    standin.insert(DB, TASKS, task_doc("good", "u1", prompt="p" * 1000, metadata={"progress": 0.5}))
    standin.insert(DB, ECONOMY, economy_doc("e1", "u1", credit="2.5"))
    settings = Settings(store=StoreSettings(key_prefix=prefix, cluster=backend == "cluster"), mongo_url=standin.url,
                        rules=Rules())
    with MongoClient(standin.url, serverSelectionTimeoutMS=3000) as mongo:
        worker = Worker(settings, real_redis, mongo, progress=False)
        try:
            settle(worker)  # no checkpoint: the first steps resync
        finally:
            worker.close()
    [letter] = DeadLetters(real_redis, layout).recent()
    assert letter["id"] == "bad" and "a lighthouse at dusk" in letter["document"]
    shown = snapshot(real_redis, layout, "u1")
    assert [(t["generationId"], t["progressPercent"]) for t in shown["liveTasks"]] == [("good", 50.0)]
    assert shown["balance"]["usdCredit"] == "2.5"
