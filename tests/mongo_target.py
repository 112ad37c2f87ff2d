"""Where the capture tests find MongoDB: a fresh in-process stand-in, or the replica set that
``MONGO_TEST_URL`` names (``make test-mongo``).

    with mongo_target() as mongo:      # StandIn, or ReplicaSet when MONGO_TEST_URL is set
        mongo.insert("app", "generationOutputs", {...})

``ReplicaSet`` offers the stand-in's write and read helpers through pymongo. A fault only the
stand-in can inject (truncated history, injected errors and hang-ups, counting commands) skips the
test there, saying so. The tests empty ``app.generationOutputs`` and ``app.userEconomy`` first, so
the replica set must be one for tests: its ``app`` database is refused unless it holds only what
tests wrote (the marker collection ``livestatus_test_marker``).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from bson import Timestamp
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError

from standin import DuplicateKey, StandIn

ENV = "MONGO_TEST_URL"
MARKER = "livestatus_test_marker"
EMPTIED = ("generationOutputs", "userEconomy")


def target_url() -> str | None:
    """The replica set the capture tests should run against, or None for the stand-in."""
    return os.environ.get(ENV) or None


@contextlib.contextmanager
def mongo_target() -> Iterator[Any]:
    """A started StandIn, or the MONGO_TEST_URL replica set emptied of the tests' collections."""
    url = target_url()
    if url is None:
        with StandIn() as stand_in:
            yield stand_in
        return
    replica_set = ReplicaSet(url)
    try:
        replica_set.reset("app")
        yield replica_set
    finally:
        replica_set.close()


class ReplicaSet:
    """The StandIn helpers the capture tests use, on a real replica set."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: MongoClient = MongoClient(url, serverSelectionTimeoutMS=10_000)

    def close(self) -> None:
        self.client.close()

    def reset(self, db: str) -> None:
        """Empty the collections the tests write, refusing a database tests did not create."""
        names = set(self.client[db].list_collection_names())
        if names and MARKER not in names:
            pytest.exit(
                f"{ENV}: database {db!r} holds collections tests did not write ({sorted(names)[:5]}); "
                "point MONGO_TEST_URL at a replica set for tests only", returncode=2,
            )
        self.client[db][MARKER].replace_one({"_id": 1}, {"_id": 1}, upsert=True)
        for name in EMPTIED:
            self.client[db].drop_collection(name)

    # ------------------------------------------------------------ writes and reads

    def insert(self, db: str, coll: str, doc: Mapping) -> Any:
        """Insert a copy of ``doc``; raises the stand-in's DuplicateKey, as StandIn.insert does."""
        try:
            return self.client[db][coll].insert_one(copy.deepcopy(dict(doc))).inserted_id
        except DuplicateKeyError:
            raise DuplicateKey(f"{db}.{coll}", doc.get("_id")) from None

    def update(self, db: str, coll: str, _id: Any, *, set: Mapping | None = None,
               unset: Mapping | list | None = None, inc: Mapping | None = None, upsert: bool = False) -> bool:
        update: dict = {}
        if set:
            update["$set"] = dict(set)
        if unset:
            update["$unset"] = dict.fromkeys(unset, "") if not isinstance(unset, Mapping) else dict(unset)
        if inc:
            update["$inc"] = dict(inc)
        result = self.client[db][coll].update_one({"_id": _id}, update, upsert=upsert)
        return result.matched_count > 0

    def replace(self, db: str, coll: str, _id: Any, doc: Mapping, *, upsert: bool = False) -> bool:
        return self.client[db][coll].replace_one({"_id": _id}, dict(doc), upsert=upsert).matched_count > 0

    def delete(self, db: str, coll: str, _id: Any) -> bool:
        return self.client[db][coll].delete_one({"_id": _id}).deleted_count > 0

    def drop(self, db: str, coll: str) -> bool:
        existed = coll in self.client[db].list_collection_names()
        self.client[db].drop_collection(coll)
        return existed

    def get(self, db: str, coll: str, _id: Any) -> dict | None:
        return self.client[db][coll].find_one({"_id": _id})

    def find(self, db: str, coll: str, filter: Mapping | None = None, sort: Mapping | None = None) -> list[dict]:
        return list(self.client[db][coll].find(filter or {}, sort=list((sort or {}).items()) or None))

    def documents(self, db: str, coll: str) -> list[dict]:
        return self.find(db, coll)

    def count(self, db: str, coll: str, filter: Mapping | None = None) -> int:
        return self.client[db][coll].count_documents(filter or {})

    def cluster_time(self) -> Timestamp:
        """The replica set's latest operation time."""
        return self.client.admin.command("ping")["operationTime"]

    # ------------------------------------------------------------ what only the stand-in can do

    @staticmethod
    def _only_the_stand_in(what: str):
        def skip(*args: Any, **kwargs: Any) -> Any:
            pytest.skip(f"needs the stand-in: {what} ({ENV} is set)")

        return skip

    truncate_history = _only_the_stand_in("losing the oplog history on demand")
    invalidate = _only_the_stand_in("an invalidate event on demand")
    fail_next = _only_the_stand_in("failing a command on demand")
    hangup_next = _only_the_stand_in("dropping a connection on demand")
    pending_faults = _only_the_stand_in("counting injected faults")
    command_count = _only_the_stand_in("counting the commands received")

    @property
    def change_stream_opens(self) -> Any:
        self._only_the_stand_in("recording how change streams were opened")()

    @property
    def port(self) -> Any:
        self._only_the_stand_in("the stand-in's refusal of every login")()
