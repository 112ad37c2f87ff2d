"""How an oplog entry looks as a change event, and the resume token that names it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import tokens
from .oplog import DROP, DROP_DATABASE, INSERT, INVALIDATE, RENAME, REPLACE, UPDATE, Entry


def token_data(entry: Entry) -> tokens.TokenData:
    """The resume token data of the event an entry gives (an invalidate's is ``fromInvalidate``)."""
    return tokens.TokenData(entry.cluster_time, txn_op_index=entry.index, from_invalidate=entry.op == INVALIDATE)


def invalidate_event(entry: Entry) -> dict:
    return {
        "_id": tokens.event_token(entry.cluster_time, entry.index, from_invalidate=True),
        "operationType": INVALIDATE,
        "clusterTime": tokens.to_timestamp(entry.cluster_time),
        "wallTime": entry.wall,
    }


def render(entry: Entry, lookup: Callable[[str, str, Any], dict | None] | None) -> dict:
    """The event of a data or catalog entry; ``lookup`` gives updates their current document
    (``fullDocument: updateLookup``). Transactions' events carry ``lsid`` and ``txnNumber``
    (jstests/change_streams/apply_ops.js)."""
    op = entry.op
    event: dict = {
        "_id": tokens.event_token(entry.cluster_time, entry.index),
        "operationType": op,
        "clusterTime": tokens.to_timestamp(entry.cluster_time),
        "wallTime": entry.wall,
    }
    if op == INSERT or op == REPLACE:
        event["fullDocument"] = entry.post
    elif op == UPDATE and lookup is not None:
        event["fullDocument"] = lookup(entry.db, entry.coll, entry.doc_id)
    if op == DROP_DATABASE:
        event["ns"] = {"db": entry.db}
    else:
        event["ns"] = {"db": entry.db, "coll": entry.coll}
    if op == RENAME:
        event["to"] = dict(entry.to)
    elif op != DROP and op != DROP_DATABASE:
        event["documentKey"] = {"_id": entry.doc_id}
    if op == UPDATE:
        event["updateDescription"] = entry.description
    if entry.txn is not None:
        event.update(entry.txn)
    return event
