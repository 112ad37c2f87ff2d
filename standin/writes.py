"""Write statements (insert, update, delete) against a view of the collections.

A view is the committed data (``store.Committed``) or a transaction's (``transactions.TxnView``):
it reads documents, stores and removes them, and records each change for the oplog. The caller
holds the store's lock while a batch runs. Stored documents are immutable (copy-on-write).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bson import ObjectId

from .errors import CommandError, DuplicateKey
from .oplog import DELETE, INSERT, REPLACE, UPDATE
from .query import compile_filter
from .update import apply_operators, apply_replacement, ensure_id, is_operator_update, same_value, seed_from_filter
from .values import id_key


class View(Protocol):
    def docs(self, db: str, coll: str) -> Mapping | None: ...
    def put(self, db: str, coll: str, key: Any, doc: dict) -> None: ...
    def remove(self, db: str, coll: str, key: Any) -> None: ...
    def record(self, op: str, db: str, coll: str, **fields: Any) -> None: ...


@dataclass
class WriteResult:
    """Outcome of a batch of write statements, shaped like a write command's reply."""

    n: int = 0
    modified: int = 0
    upserted: list = field(default_factory=list)  # (statement index, _id)
    errors: list = field(default_factory=list)  # (statement index, CommandError)


def run_batch(statements: Iterable, ordered: bool, run: Callable[[Any, int, WriteResult], None]) -> WriteResult:
    result = WriteResult()
    for index, statement in enumerate(statements):
        try:
            run(statement, index, result)
        except CommandError as error:
            result.errors.append((index, error))
            if ordered:
                break
    return result


def insert_one(view: View, db: str, coll: str, doc: dict) -> Any:
    doc = ensure_id(doc)
    _id = doc["_id"]
    if isinstance(_id, list):
        raise CommandError(2, "can't use an array for _id")
    key = id_key(_id)
    docs = view.docs(db, coll)
    if docs is not None and key in docs:
        raise DuplicateKey(f"{db}.{coll}", _id)
    view.put(db, coll, key, doc)
    view.record(INSERT, db, coll, doc_id=_id, post=doc)
    return _id


def insert_statement(view: View, db: str, coll: str) -> Callable[[Any, int, WriteResult], None]:
    def run(doc: dict, index: int, result: WriteResult) -> None:
        insert_one(view, db, coll, doc)
        result.n += 1

    return run


def update_statement(view: View, db: str, coll: str) -> Callable[[Mapping, int, WriteResult], None]:
    """Runs ``{"q": filter, "u": update, "multi": b, "upsert": b}``."""

    def run(stmt: Mapping, index: int, result: WriteResult) -> None:
        filter_doc, update = stmt.get("q") or {}, stmt.get("u")
        operators = is_operator_update(update)
        multi = bool(stmt.get("multi", False))
        if multi and not operators:
            raise CommandError(9, "multi update is not supported for replacement-style update")
        targets = matching(view.docs(db, coll), filter_doc, multi)
        if not targets:
            if stmt.get("upsert"):
                seed = seed_from_filter(filter_doc)
                new = apply_operators(seed, update)[0] if operators else apply_replacement(seed, update)
                result.n += 1
                result.upserted.append((index, insert_one(view, db, coll, new)))
            return
        for old in targets:
            result.n += 1
            if change(view, db, coll, old, update, operators):
                result.modified += 1

    return run


def change(view: View, db: str, coll: str, old: dict, update: Any, operators: bool) -> bool:
    if operators:
        new, description = apply_operators(old, update)
        if not description.updated and not description.removed:
            return False
    else:
        new = apply_replacement(old, update)
        if same_value(old, new):
            return False
    _id = old["_id"]
    view.put(db, coll, id_key(_id), new)
    if operators:
        view.record(UPDATE, db, coll, doc_id=_id, description=description.as_event_field())
    else:
        view.record(REPLACE, db, coll, doc_id=_id, post=new)
    return True


def delete_statement(view: View, db: str, coll: str) -> Callable[[Mapping, int, WriteResult], None]:
    """Runs ``{"q": filter, "limit": 0 | 1}``."""

    def run(stmt: Mapping, index: int, result: WriteResult) -> None:
        for old in matching(view.docs(db, coll), stmt.get("q") or {}, multi=not stmt.get("limit")):
            view.remove(db, coll, id_key(old["_id"]))
            view.record(DELETE, db, coll, doc_id=old["_id"])
            result.n += 1

    return run


def matching(docs: Mapping | None, filter_doc: Mapping | None, multi: bool = True) -> list[dict]:
    """Documents matching a filter (the first only unless ``multi``)."""
    if not docs:
        return []
    if filter_doc and len(filter_doc) == 1 and _is_plain_id(filter_doc.get("_id", [])):
        doc = docs.get(id_key(filter_doc["_id"]))  # the common update/delete by _id
        return [doc] if doc is not None else []
    predicate = compile_filter(filter_doc)
    found = []
    for doc in candidates(docs, filter_doc):
        if predicate(doc):
            found.append(doc)
            if not multi:
                break
    return found


def candidates(docs: Mapping, filter_doc: Mapping | None) -> Iterable[dict]:
    """Documents that may match: a direct lookup when the filter pins ``_id``."""
    if not filter_doc or "_id" not in filter_doc:
        return list(docs.values())
    cond = filter_doc["_id"]
    if isinstance(cond, Mapping) and cond and all(str(k).startswith("$") for k in cond):
        if list(cond) == ["$in"] and isinstance(cond["$in"], list):
            keys = dict.fromkeys(id_key(v) for v in cond["$in"])  # embedded documents are _ids too
            return [docs[k] for k in keys if k in docs]
        return list(docs.values())
    doc = docs.get(id_key(cond))
    return [doc] if doc is not None else []


def _is_plain_id(value: Any) -> bool:
    return isinstance(value, (str, int, ObjectId)) and not isinstance(value, bool)
