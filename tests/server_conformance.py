"""Fixtures and helpers of the server-conformance tests (test_server_conformance*.py).

Those tests check change-stream behaviours the projector relies on, each as the MongoDB server's
own tests and source state it (public repository mongodb/mongo, file named in each test). They
run against the stand-in, or unchanged against a real replica set when ``MONGO_TEST_URL`` is set
(tests/mongo_target.py). Everything goes through pymongo: a test that needs a batch boundary
uses the raw ``aggregate``/``getMore`` commands. Where the server's files do not settle a
behaviour, the test says so instead of asserting it.
"""

from __future__ import annotations

import time

import pytest
from bson import Timestamp
from pymongo import MongoClient

from .mongo_target import mongo_target

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
