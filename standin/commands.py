"""Database commands: each request document becomes a reply document.

``Dispatcher.handle`` is the wire server's handler. It applies armed faults, runs the
command against the store, and stamps ``operationTime`` and ``$clusterTime`` on the reply.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bson import Binary, Int64, ObjectId

from . import errors, tokens
from .changestream import ChangeStreamCursor, ChangeStreamOpen
from .crud import DataCommands
from .cursors import Cursors, QueryCursor, cursor_reply
from .errors import CommandError
from .faults import Fault, Faults, fail_point
from .pipeline import run_pipeline
from .store import Store
from .transactions import Transactions, check_open
from .wire import HANGUP

log = logging.getLogger(__name__)

MAX_WIRE_VERSION = 21  # MongoDB 7.0
WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify"})
# Commands that may run in a transaction; they take it as a third argument.
TRANSACTION_COMMANDS = frozenset(WRITE_COMMANDS | {"find", "getMore", "killCursors", "count", "aggregate",
                                                   "findAndModify", "findandmodify", "distinct",
                                                   "commitTransaction", "abortTransaction"})
_SIGNATURE = {"hash": Binary(b"\x00" * 20), "keyId": Int64(0)}


class Dispatcher:
    """Runs commands against a store; records what tests want to assert on."""

    def __init__(self, store: Store, faults: Faults, *, replica_set: str = "rs0") -> None:
        self.store = store
        self.faults = faults
        self.cursors = Cursors()
        self.transactions = Transactions()
        self.replica_set = replica_set
        self.host = "127.0.0.1:27017"
        self._stats_lock = threading.Lock()
        self.command_counts: Counter[str] = Counter()
        self.change_stream_opens: list[ChangeStreamOpen] = []
        self._app_names: dict[int, str] = {}  # client port -> appName from its handshake
        self._handlers = {
            "hello": self.hello,
            "isMaster": self.hello,
            "ismaster": self.hello,
            "ping": self.ok,
            "endSessions": self.ok,
            "buildInfo": self.build_info,
            "buildinfo": self.build_info,
            "getCmdLineOpts": self.cmd_line_opts,
            "serverStatus": self.server_status,
            "getParameter": self.get_parameter,
            "configureFailPoint": self.configure_fail_point,
            "killAllSessions": self.ok,
            "listCollections": self.list_collections,
            "create": self.create,
            "drop": self.drop,
            "dropDatabase": self.drop_database,
            "renameCollection": self.rename_collection,
            "saslStart": self.authenticate,
            "commitTransaction": self.commit_transaction,
            "abortTransaction": self.abort_transaction,
            **DataCommands(store, self.cursors, self.record_open).handlers(),
        }

    # ------------------------------------------------------------ dispatch

    def handle(self, request: Any) -> Any:
        """The reply document for a request, ``HANGUP``, or None for no reply."""
        if not getattr(request, "is_command", False):
            return HANGUP  # legacy OP_QUERY/OP_GET_MORE/OP_INSERT...: not spoken by pymongo 4
        command = request.doc
        name = next(iter(command), "")
        db = command.get("$db") or request.namespace or "admin"
        with self._stats_lock:
            self.command_counts[name] += 1
            if name in ("hello", "isMaster", "ismaster") and isinstance(command.get("client"), Mapping):
                self._app_names[request.client_port] = command["client"].get("application", {}).get("name")
            app_name = self._app_names.get(request.client_port)
        fault = self.faults.take(name, command, app_name)
        if fault is not None:
            if fault.block_seconds:
                time.sleep(fault.block_seconds)
            if fault.close:
                return HANGUP
        try:
            if fault is not None and fault.code is not None:
                raise self._fault_error(fault, name, command)
            handler = self._handlers.get(name)
            if handler is None:
                raise CommandError(59, f"no such command: '{name}'")
            if Transactions.in_transaction(command):
                if name not in TRANSACTION_COMMANDS:
                    raise CommandError(263, f"Cannot run '{name}' in a multi-document transaction.")
                reply = handler(command, db, self.transactions.for_command(command))
            elif name in TRANSACTION_COMMANDS:
                reply = handler(command, db, None)
            else:
                reply = handler(command, db)
        except CommandError as error:
            reply = error.reply()
        except Exception as error:  # a bug here must not kill the connection thread
            log.exception("stand-in failed on %s", name)
            reply = CommandError(1, f"stand-in internal error in {name}: {error!r}").reply()
        reply.setdefault("ok", 1.0)
        now = tokens.to_timestamp(self.store.cluster_time())
        reply["operationTime"] = now
        reply["$clusterTime"] = {"clusterTime": now, "signature": _SIGNATURE}
        return reply

    def _fault_error(self, fault: Fault, name: str, command: Mapping) -> CommandError:
        # The labels given; else none (failCommand), or those a real error of that code carries.
        labels = list(fault.labels) if fault.labels is not None else []
        if fault.labels is None and fault.server_labels:
            if fault.code == 286:
                labels = [errors.NON_RESUMABLE]
            elif name in WRITE_COMMANDS and fault.code in errors.RETRYABLE_WRITE_CODES:
                labels = [errors.RETRYABLE_WRITE]
            elif name == "getMore" and fault.code in errors.RESUMABLE_CHANGE_STREAM_CODES:
                if isinstance(self.cursors.peek(command.get("getMore")), ChangeStreamCursor):
                    labels = [errors.RESUMABLE]
        message = fault.message or f"stand-in injected failure of {name}"
        return CommandError(fault.code, message, labels)

    def record_open(self, opened: ChangeStreamOpen) -> None:
        with self._stats_lock:
            self.change_stream_opens.append(opened)

    def opens(self) -> list[ChangeStreamOpen]:
        with self._stats_lock:
            return list(self.change_stream_opens)

    def count_of(self, name: str) -> int:
        with self._stats_lock:
            return self.command_counts[name]

    # ------------------------------------------------------------ handshake and admin

    def authenticate(self, command: Mapping, db: str) -> dict:
        # The stand-in has no users: every login fails, as with unknown credentials on a real server.
        raise CommandError(18, "Authentication failed.")

    def hello(self, command: Mapping, db: str) -> dict:
        # No topologyVersion: clients then poll hello instead of expecting a streaming one.
        reply: dict = {"isWritablePrimary" if "hello" in command else "ismaster": True}
        if command.get("helloOk"):
            reply["helloOk"] = True
        reply.update(
            {
                "hosts": [self.host],
                "setName": self.replica_set,
                "setVersion": 1,
                "primary": self.host,
                "me": self.host,
                "electionId": ObjectId("7fffffff0000000000000001"),
                "secondary": False,
                "maxBsonObjectSize": 16 * 1024 * 1024,
                "maxMessageSizeBytes": 48_000_000,
                "maxWriteBatchSize": 100_000,
                "localTime": datetime.now(UTC),
                "logicalSessionTimeoutMinutes": 30,
                "minWireVersion": 0,
                "maxWireVersion": MAX_WIRE_VERSION,
                "readOnly": False,
            }
        )
        return reply

    def ok(self, command: Mapping, db: str) -> dict:
        return {}

    def build_info(self, command: Mapping, db: str) -> dict:
        return {
            "version": "7.0.0",
            "versionArray": [7, 0, 0, 0],
            "gitVersion": "standin",
            "bits": 64,
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "storageEngines": ["standin"],
            "standin": True,
        }

    def cmd_line_opts(self, command: Mapping, db: str) -> dict:
        # What a single-node replica set started for driver tests reports (test commands on).
        return {
            "argv": ["mongod", "--replSet", self.replica_set, "--setParameter", "enableTestCommands=1"],
            "parsed": {"replication": {"replSet": self.replica_set}, "setParameter": {"enableTestCommands": "1"}},
        }

    def server_status(self, command: Mapping, db: str) -> dict:
        return {"host": self.host, "version": "7.0.0", "process": "mongod", "storageEngine": {"name": "standin"}}

    def get_parameter(self, command: Mapping, db: str) -> dict:
        parameters = {"enableTestCommands": True, "featureCompatibilityVersion": {"version": "7.0"}}
        wanted = command["getParameter"]
        if wanted == "*" or command.get("allParameters"):
            return parameters
        return {name: value for name, value in parameters.items() if name in command}

    def configure_fail_point(self, command: Mapping, db: str) -> dict:
        if db != "admin":
            raise CommandError(13, "configureFailPoint may only be run against the admin database.")
        fault = fail_point(command)
        if fault is not None and command["configureFailPoint"] == "failGetMoreAfterCursorCheckout":
            fault.when = lambda getmore: self.cursors.peek(getmore.get("getMore")) is not None  # checked out
        self.faults.set_fail_point(command["configureFailPoint"], fault)
        return {"count": 0}

    # ------------------------------------------------------------ transactions

    def commit_transaction(self, command: Mapping, db: str, txn: Any) -> dict:
        if txn is None:
            raise CommandError(50768, "commitTransaction must be run within a transaction")
        if txn.state == "committed":
            return {}  # a retried commit
        check_open(txn, "commitTransaction")
        self.store.commit(txn)
        txn.state = "committed"
        return {}

    def abort_transaction(self, command: Mapping, db: str, txn: Any) -> dict:
        if txn is None:
            raise CommandError(50768, "abortTransaction must be run within a transaction")
        check_open(txn, "abortTransaction")
        txn.state = "aborted"
        return {}

    # ------------------------------------------------------------ catalog

    def drop(self, command: Mapping, db: str) -> dict:
        coll = command["drop"]
        if not self.store.drop(db, coll):
            raise CommandError(26, "ns not found")
        return {"ns": f"{db}.{coll}", "nIndexesWas": 1}

    def rename_collection(self, command: Mapping, db: str) -> dict:
        if db != "admin":
            raise CommandError(13, "renameCollection may only be run against the admin database.")
        source, target = (_namespace(command.get(field)) for field in ("renameCollection", "to"))
        self.store.rename(*source, *target, drop_target=bool(command.get("dropTarget")))
        return {}

    def drop_database(self, command: Mapping, db: str) -> dict:
        self.store.drop_database(db)
        return {"dropped": db}

    def create(self, command: Mapping, db: str) -> dict:
        if not self.store.create(db, command["create"]):
            raise CommandError(48, f"Collection already exists. NS: {db}.{command['create']}")
        return {}

    def list_collections(self, command: Mapping, db: str) -> dict:
        infos = [
            {"name": name, "type": "collection", "options": {}, "info": {"readOnly": False}}
            for name in self.store.collection_names(db)
        ]
        docs = run_pipeline(infos, [{"$match": command.get("filter") or {}}])
        if command.get("nameOnly"):
            docs = [{"name": d["name"], "type": d["type"]} for d in docs]
        return cursor_reply(self.cursors, QueryCursor(f"{db}.$cmd.listCollections", docs), "firstBatch", docs, True)


def _namespace(value: Any) -> tuple[str, str]:
    db, dot, coll = value.partition(".") if isinstance(value, str) else ("", "", "")
    if not db or not dot or not coll:
        raise CommandError(73, f"Invalid namespace specified '{value}'")
    return db, coll
