"""``StandIn``: a MongoDB replica-set primary on a local port, backed by the in-memory store.

    with StandIn() as mongo:
        client = MongoClient(mongo.url)
        mongo.insert("app", "users", {"_id": 1})
        mongo.fail_next("getMore", code=91)   # pymongo resumes the change stream by itself
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

from bson import Timestamp

from . import tokens
from .changestream import ChangeStreamOpen
from .commands import Dispatcher
from .faults import Fault, Faults
from .oplog import NOOP_INTERVAL_SECONDS
from .store import Store, snapshot
from .update import ensure_id
from .wire import WireServer


class StandIn:
    """A wire-level MongoDB stand-in that real pymongo talks to.

    ``port=0`` picks a free port. All methods are thread-safe. ``oplog_limit`` caps the
    change history like a capped oplog: resuming from before it fails with error 286.
    ``noop_interval`` is the server's ``periodicNoopIntervalSecs``: an oplog idle that long gets a
    no-op entry when a change stream waits, so idle streams' post-batch tokens advance.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        replica_set: str = "rs0",
        oplog_limit: int | None = None,
        clock: Callable[[], float] = time.time,
        noop_interval: float = NOOP_INTERVAL_SECONDS,
    ) -> None:
        self.store = Store(oplog_limit=oplog_limit, clock=clock, noop_interval=noop_interval)
        self._faults = Faults()
        self._dispatcher = Dispatcher(self.store, self._faults, replica_set=replica_set)
        self._server = WireServer(self._dispatcher.handle, host, port)
        self._host = host
        self._started = False
        self._stopped = False

    # ------------------------------------------------------------ lifecycle

    def start(self) -> StandIn:
        """Start listening (idempotent); returns self."""
        if not self._started:
            self._started = True
            try:
                port = self._server.run()
            except BaseException:
                self._stopped = True
                self._server.stop()
                raise
            advertised = "localhost" if self._host in ("0.0.0.0", "::", "") else self._host
            self._dispatcher.host = f"{advertised}:{port}"
        return self

    def stop(self) -> None:
        """Stop serving, waking any waiting getMore first; idempotent and quick."""
        if self._stopped:
            return
        self._stopped = True
        self.store.close()
        self._server.stop()
        self._dispatcher.cursors.clear()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "serving" if self._started else "not started"
        return f"<StandIn {self.address if self._started else ''} {state}>"

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def address(self) -> str:
        """``host:port`` as advertised to clients."""
        return self._dispatcher.host

    @property
    def url(self) -> str:
        """A connection string for ``MongoClient`` (direct connection to this server)."""
        if not self._started:
            raise RuntimeError("start() the stand-in before asking for its url")
        return f"mongodb://{self.address}/?directConnection=true"

    # ------------------------------------------------------------ writes without the wire

    def insert(self, db: str, coll: str, doc: Mapping) -> Any:
        """Insert a copy of ``doc``; returns its ``_id``. Raises DuplicateKey."""
        stored = ensure_id(copy.deepcopy(dict(doc)))
        result = self.store.insert(db, coll, [stored])
        if result.errors:
            raise result.errors[0][1]
        return stored["_id"]

    def update(
        self,
        db: str,
        coll: str,
        _id: Any,
        *,
        set: Mapping | None = None,
        unset: Mapping | list | None = None,
        inc: Mapping | None = None,
        upsert: bool = False,
    ) -> bool:
        """Apply ``$set``/``$unset``/``$inc`` to one document; True if it matched."""
        update: dict = {}
        if set:
            update["$set"] = copy.deepcopy(dict(set))
        if unset:
            update["$unset"] = dict.fromkeys(unset, "") if not isinstance(unset, Mapping) else dict(unset)
        if inc:
            update["$inc"] = dict(inc)
        if not update:
            raise ValueError("give at least one of set=, unset=, inc=")
        return self._update_one(db, coll, _id, update, upsert)

    def replace(self, db: str, coll: str, _id: Any, doc: Mapping, *, upsert: bool = False) -> bool:
        """Replace one document by ``_id``; True if it matched."""
        return self._update_one(db, coll, _id, copy.deepcopy(dict(doc)), upsert)

    def _update_one(self, db: str, coll: str, _id: Any, update: dict, upsert: bool) -> bool:
        result = self.store.update(db, coll, [{"q": {"_id": _id}, "u": update, "upsert": upsert}])
        if result.errors:
            raise result.errors[0][1]
        return result.n > 0 and not result.upserted

    def delete(self, db: str, coll: str, _id: Any) -> bool:
        """Delete one document by ``_id``; True if it existed."""
        return self.store.delete(db, coll, [{"q": {"_id": _id}, "limit": 1}]).n > 0

    def drop(self, db: str, coll: str) -> bool:
        """Drop a collection (drop event, then its collection streams are invalidated)."""
        return self.store.drop(db, coll)

    # ------------------------------------------------------------ reads without the wire

    def get(self, db: str, coll: str, _id: Any) -> dict | None:
        """A copy of one document, or None."""
        doc = self.store.lookup(db, coll, _id)
        return copy.deepcopy(doc) if doc is not None else None

    def find(self, db: str, coll: str, filter: Mapping | None = None, sort: Mapping | None = None) -> list[dict]:
        """Copies of the matching documents, in insertion order unless sorted."""
        return snapshot(self.store.find(db, coll, filter, sort))

    def documents(self, db: str, coll: str) -> list[dict]:
        """Copies of every document of a collection, in insertion order."""
        return self.find(db, coll)

    def count(self, db: str, coll: str, filter: Mapping | None = None) -> int:
        return len(self.store.find(db, coll, filter))

    def cluster_time(self) -> Timestamp:
        """The cluster time of the latest write."""
        return tokens.to_timestamp(self.store.cluster_time())

    def resume_token(self) -> dict:
        """A resume token for "after everything written so far": a high-water mark one tick after
        the latest oplog entry, as a new stream starts from."""
        return tokens.high_water_mark(self.store.cluster_time() + 1)

    # ------------------------------------------------------------ faults

    def truncate_history(self) -> Timestamp:
        """Forget the oplog: resuming from any earlier token or time fails with error 286."""
        return tokens.to_timestamp(self.store.truncate_history())

    def invalidate(self, db: str | None = None, coll: str | None = None) -> None:
        """Send an invalidate event to open streams on ``db`` (every db if None) and close them.

        With ``coll``, only streams on that collection are invalidated (as a drop would).
        """
        self.store.invalidate(db, coll)

    def fail_next(
        self,
        command: str,
        code: int = 91,
        *,
        labels: list[str] | None = None,
        message: str | None = None,
        times: int = 1,
        when: Callable[[Mapping], bool] | None = None,
    ) -> None:
        """Make the next ``times`` commands named ``command`` fail with ``code``.

        ``labels=None`` labels the error like a real server would: ResumableChangeStreamError
        on a change-stream getMore with a resumable code, RetryableWriteError on writes with
        a retryable code, NonResumableChangeStreamError on 286. Pass a list to override.
        ``when`` narrows the fault to commands whose document it accepts, e.g.
        ``when=lambda cmd: cmd.get("collection") == "$cmd.aggregate"`` for db-level streams.
        """
        self._faults.arm(Fault(frozenset({command.lower()}), times, code=code, message=message, labels=labels, when=when))

    def hangup_next(self, command: str, *, times: int = 1, when: Callable[[Mapping], bool] | None = None) -> None:
        """Drop the connection instead of answering the next ``times`` ``command`` commands."""
        self._faults.arm(Fault(frozenset({command.lower()}), times, close=True, when=when))

    def clear_faults(self) -> None:
        self._faults.clear()

    def pending_faults(self) -> int:
        """How many armed failures have not fired yet."""
        return self._faults.pending()

    # ------------------------------------------------------------ observation

    @property
    def change_stream_opens(self) -> list[ChangeStreamOpen]:
        """Every ``$changeStream`` aggregate received, with its resume options, in order."""
        return self._dispatcher.opens()

    def command_count(self, command: str) -> int:
        """How many commands of this name were received."""
        return self._dispatcher.count_of(command)
