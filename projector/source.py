"""MongoDB through pymongo: one database-level change stream over both collections, and scans."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from bson import Timestamp
from bson.codec_options import DatetimeConversion
from pymongo import MongoClient
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError, ServerSelectionTimeoutError
from pymongo.uri_parser import parse_uri

from readmodel import position

from .checkpoint import Checkpoint
from .normalize import BALANCE_DOCUMENT_FIELDS, TASK_DOCUMENT_FIELDS
from .projection import ECONOMY, TASKS
from .readahead import read_ahead
from .reading import Stream

# txnNumber: a transaction's events carry it (projector.tailing keeps its time unannounced until
# all of them are applied).
EVENT_FIELDS = ("operationType", "clusterTime", "wallTime", "ns", "to", "documentKey", "txnNumber",
                *(f"fullDocument.{name}" for name in dict.fromkeys(TASK_DOCUMENT_FIELDS + BALANCE_DOCUMENT_FIELDS)))

# What a resync's scan reads of each collection: the fields normalization reads, as the change
# stream's $project (a task document's prompt, payloads and ids never cross the wire). A rejected
# document is fetched whole for its dead letter (resync._write, full_documents()). A find
# projection of dotted paths keeps the embedded fields named, as $project does
# (mongodb/mongo jstests/core/query/project/projection_dotted_paths.js).
SCAN_FIELDS = {TASKS: TASK_DOCUMENT_FIELDS, ECONOMY: BALANCE_DOCUMENT_FIELDS}

log = logging.getLogger(__name__)

# Server errors after which a stream that was open cannot continue from where it was: rebuild.
RESYNC_CODES = frozenset({260, 280, 286})  # InvalidResumeToken, ChangeStreamFatalError, ChangeStreamHistoryLost
# Errors that say "not now", not "never": a step-down, a node shutting down, a stale router, a
# network fault (the change streams spec's resumable errors; pymongo resumes a getMore on them).
TRANSIENT_CODES = frozenset({
    6, 7, 43, 50, 63, 89, 91, 133, 134, 150, 189, 234, 262, 9001, 10107, 11600, 11602, 13388, 13435, 13436,
})
TRANSIENT_LABELS = ("ResumableChangeStreamError", "RetryableWriteError", "TransientTransactionError")


class SourceError(Exception):
    """MongoDB is unreachable or unusable for change streams; the message is one sentence."""


def needs_resync(exc: BaseException) -> bool:
    """True when ``exc``, raised by a stream that was open, means it cannot go on from there."""
    return isinstance(exc, OperationFailure) and exc.code in RESYNC_CODES


def refuses_resume(exc: BaseException) -> bool:
    """True when the server refused to open a stream from a stored resume point for good.

    A token it cannot parse is FailedToParse (9) or an assertion code from ``ResumeToken``
    parsing (``src/mongo/db/pipeline/resume_token.cpp``: 40649, 50796, ...); one it cannot find is
    280 (``document_source_change_stream_ensure_resume_token_present.cpp``); history that is gone
    is 286; codes not known today count too. Only what is transient (a step-down, a shutdown, the
    network: ``TRANSIENT_CODES``/``TRANSIENT_LABELS``) is retried from the same point.
    """
    if not isinstance(exc, OperationFailure):
        return False
    if any(exc.has_error_label(label) for label in TRANSIENT_LABELS):
        return False
    return exc.code not in TRANSIENT_CODES


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
                        # A rename INTO a watched collection (plain, dropTarget, $out, from another
                        # database) names it only in "to" (whole_db_metadata_notifications.js).
                        {"to.coll": {"$in": names}},
                        {"operationType": {"$in": ["dropDatabase", "invalidate"]}},
                    ]
                }
            },
            # Only what normalization reads (the resume token _id is always kept); a dead letter
            # fetches the whole document instead, see full_documents().
            {"$project": dict.fromkeys(EVENT_FIELDS, 1)},
        ]

    def open(self, checkpoint: Checkpoint | None = None) -> Stream:
        """A stream from ``checkpoint`` (raises an OperationFailure that :func:`refuses_resume`
        recognizes when it is unusable), or from now when None. Nothing is read until the
        stream's reader starts (:meth:`Stream.begin`)."""
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
            # A new stream starts one tick after the last write the server applied
            # (getStartTimeForNewStream, addTicks(1)); the aggregate's operationTime is that write:
            # the position before any event this stream returns, which a resync scans at.
            found = _operation_position(session) or token_position(stream.resume_token)
            if found is None:
                stream.close()
                session.end_session()
                raise SourceError("the server reported no operationTime for the change stream; cannot take a start point.")
            start = found
        return Stream(stream, session, start, capacity=2 * self.batch_size)

    def estimated_total(self) -> int:
        return sum(self.db[name].estimated_document_count() for name in self.collections.values())

    def full_documents(self, kind: str, ids: list[Any]) -> dict[Any, Mapping[str, Any]]:
        """The whole current documents with these _ids (for dead letters: events are trimmed)."""
        found = self.db[self.collections[kind]].find({"_id": {"$in": ids}})
        return {id_key(doc["_id"]): doc for doc in found}

    def scan_ahead(self, kind: str) -> Iterator[list[Mapping[str, Any]]]:
        """Every document of one collection, trimmed to ``SCAN_FIELDS``, in lists of ``batch_size``,
        the next list read by a thread of its own while the caller works on the last
        (:mod:`.readahead`)."""
        collection = self.db[self.collections[kind]]
        fields = dict.fromkeys(SCAN_FIELDS[kind], 1)
        return read_ahead(lambda: collection.find({}, fields, batch_size=self.batch_size), self.batch_size)


def _operation_position(session: Any) -> str | None:
    operation_time = session.operation_time
    if not isinstance(operation_time, Timestamp):
        return None
    return position(operation_time.time, operation_time.inc)
