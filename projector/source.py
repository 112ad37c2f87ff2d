"""MongoDB through pymongo: one database-level change stream over both collections, and scans."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

from bson import Timestamp
from bson.codec_options import DatetimeConversion
from pymongo import MongoClient
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError, ServerSelectionTimeoutError
from pymongo.uri_parser import parse_uri

from readmodel import position

from .changes import ECONOMY, TASKS
from .checkpoint import Checkpoint
from .normalize import BALANCE_FIELDS, TASK_FIELDS

EVENT_FIELDS = ("operationType", "clusterTime", "wallTime", "ns", "documentKey",
                *(f"fullDocument.{name}" for name in dict.fromkeys(TASK_FIELDS + BALANCE_FIELDS)))

log = logging.getLogger(__name__)

# Server errors after which the stream cannot continue from where it was: rebuild instead.
RESYNC_CODES = frozenset({260, 280, 286})  # InvalidResumeToken, ChangeStreamFatalError, ChangeStreamHistoryLost
# Events after which the collections may hold anything: rebuild instead of guessing.
RESYNC_EVENTS = frozenset({"invalidate", "drop", "dropDatabase", "rename"})


class SourceError(Exception):
    """MongoDB is unreachable or unusable for change streams; the message is one sentence."""


def needs_resync(exc: BaseException) -> bool:
    """True when ``exc`` means the stored resume point can no longer be used."""
    return isinstance(exc, OperationFailure) and exc.code in RESYNC_CODES


def token_position(token: Mapping[str, Any] | None) -> str | None:
    """The cluster time inside a resume token (its ``_data`` starts with 0x82 and 8 bytes of
    timestamp, on a real server as in the stand-in); None when it cannot be read."""
    data = token.get("_data") if isinstance(token, Mapping) else None
    if not isinstance(data, str) or len(data) < 18 or data[:2] != "82":
        return None
    try:
        return position(int(data[2:10], 16), int(data[10:18], 16))
    except ValueError:
        return None


def id_key(value: Any) -> Any:
    """An _id usable as a dict key (embedded documents and arrays are valid _ids too)."""
    return repr(value) if isinstance(value, (dict, list)) else value


def hosts_of(url: str) -> str:
    """host:port list of a URL, without credentials."""
    try:
        return ",".join(f"{host}:{port}" for host, port in parse_uri(url, validate=False)["nodelist"])
    except (ConfigurationError, ValueError):
        return "the configured address"


def connect(url: str, timeout_ms: int = 5000) -> MongoClient:
    """A client that gives up on an unreachable server after ``timeout_ms``."""
    try:
        return MongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            appname="livestatus-projector",
            # A hostile document must not make a whole batch undecodable: dates outside years
            # 1..9999 arrive as DatetimeMS, invalid UTF-8 with U+FFFD; normalization rejects the rest.
            datetime_conversion=DatetimeConversion.DATETIME_AUTO,
            unicode_decode_error_handler="replace",
        )
    except ConfigurationError as exc:
        raise SourceError(f"MONGO_URL is not usable: {exc}") from None


def preflight(client: MongoClient, url: str, db_name: str, collection: str) -> None:
    """Fail fast, in one sentence, when the server cannot serve change streams to us."""
    where = hosts_of(url)
    try:
        hello = client.admin.command("hello")
        if not hello.get("setName") and hello.get("msg") != "isdbgrid":
            raise SourceError(
                f"MongoDB at {where} is not a replica set; change streams need a replica set or a sharded cluster."
            )
        client[db_name].command("count", collection)
    except ServerSelectionTimeoutError:
        raise SourceError(f"cannot reach MongoDB at {where} (gave up after a few seconds).") from None
    except OperationFailure as exc:
        if exc.code == 18 or "auth" in str(exc).lower():
            raise SourceError(f"MongoDB at {where} rejected the credentials in MONGO_URL.") from None
        raise SourceError(f"MongoDB at {where} refused to serve {db_name}.{collection}: {exc}.") from None
    except PyMongoError as exc:
        raise SourceError(f"MongoDB at {where} is not usable: {exc}.") from None


class Stream:
    """An open change stream and the position it started at."""

    def __init__(self, stream: Any, session: Any, start: str) -> None:
        self._stream = stream
        self._session = session
        self.start = start  # position before any event this stream will return

    @property
    def token(self) -> Mapping[str, Any] | None:
        """The resume token covering every event returned so far (post-batch when idle)."""
        return self._stream.resume_token

    def poll(self, max_events: int, max_wait_s: float) -> tuple[list[Mapping[str, Any]], bool]:
        """Up to ``max_events`` events, for at most about ``max_wait_s``; and whether the stream
        is caught up (the driver holds no more events). Stops after an event that ends the stream.

        Returns as soon as the driver has handed out the last event it holds: asking for one more
        would be a getMore that waits out ``maxAwaitTimeMS`` on the server when nothing new came
        (a fixed delay on every isolated change). pymongo tells us through its public
        ``resume_token``: it becomes the batch's ``postBatchResumeToken`` instead of the event's
        ``_id`` once the event handed out is the last one it holds (change streams spec). A batch
        cut by ``batchSize`` ends on the last event's own token: reading on is right then, the
        server has more.
        """
        events: list[Mapping[str, Any]] = []
        deadline = time.monotonic() + max_wait_s
        while len(events) < max_events:
            event = self._stream.try_next()
            if event is None:
                return events, True
            events.append(event)
            if event.get("operationType") in RESYNC_EVENTS or time.monotonic() >= deadline:
                break
            if self._stream.resume_token != event.get("_id"):
                return events, True  # the driver's buffer is empty
        return events, False

    def close(self) -> None:
        try:
            self._stream.close()
        except PyMongoError:
            pass
        try:
            self._session.end_session()
        except PyMongoError:
            pass


class Source:
    """The two collections of one database."""

    def __init__(
        self,
        client: MongoClient,
        db_name: str,
        tasks: str,
        economy: str,
        batch_size: int = 1000,
        max_await_ms: int = 100,
    ) -> None:
        self.client = client
        self.db = client[db_name]
        self.collections = {TASKS: tasks, ECONOMY: economy}
        self.kinds = {tasks: TASKS, economy: ECONOMY}
        self.batch_size = batch_size
        self.max_await_ms = max_await_ms

    def pipeline(self) -> list[dict[str, Any]]:
        names = list(self.kinds)
        return [
            {
                "$match": {
                    "$or": [
                        {"ns.coll": {"$in": names}},
                        {"operationType": {"$in": ["dropDatabase", "invalidate"]}},
                    ]
                }
            },
            # Only what normalization reads (the resume token _id is always kept); a dead letter
            # fetches the whole document instead, see full_documents().
            {"$project": dict.fromkeys(EVENT_FIELDS, 1)},
        ]

    def open(self, checkpoint: Checkpoint | None = None) -> Stream:
        """A stream from ``checkpoint`` (raises an OperationFailure that :func:`needs_resync`
        recognizes when it is unusable), or from now when None."""
        options: dict[str, Any] = {}
        if checkpoint is not None:
            if checkpoint.token is not None:
                options["resume_after"] = checkpoint.token
            else:
                seconds, increment = (int(part) for part in checkpoint.position.split("."))
                options["start_at_operation_time"] = Timestamp(seconds, increment)
        session = self.client.start_session(causal_consistency=False)
        try:
            stream = self.db.watch(
                self.pipeline(),
                full_document="updateLookup",
                max_await_time_ms=self.max_await_ms,
                batch_size=self.batch_size,
                session=session,
                **options,
            )
        except BaseException:
            session.end_session()
            raise
        if checkpoint is not None:
            start = checkpoint.position
        else:
            start = token_position(stream.resume_token) or _operation_position(session)
        return Stream(stream, session, start)

    def estimated_total(self) -> int:
        return sum(self.db[name].estimated_document_count() for name in self.collections.values())

    def full_documents(self, kind: str, ids: list[Any]) -> dict[Any, Mapping[str, Any]]:
        """The whole current documents with these _ids (for dead letters: events are trimmed)."""
        found = self.db[self.collections[kind]].find({"_id": {"$in": ids}})
        return {id_key(doc["_id"]): doc for doc in found}

    def scan(self, kind: str) -> Iterator[Mapping[str, Any]]:
        """Every document of one collection, in server batches."""
        with self.db[self.collections[kind]].find({}, batch_size=self.batch_size) as cursor:
            yield from cursor


def _operation_position(session: Any) -> str:
    operation_time = session.operation_time
    if not isinstance(operation_time, Timestamp):
        raise SourceError("the server reported no operationTime for the change stream; cannot take a start point.")
    return position(operation_time.time, operation_time.inc)
