"""``findAndModify`` and ``distinct`` (what the MongoDB Node.js driver's ``findOneAndUpdate``,
``findOneAndReplace``, ``findOneAndDelete`` and ``distinct`` send; jstests/core/query/
find_and_modify/ in mongodb/mongo). Runs under the store's lock through a write view, so a
modification is one change event like any other write, in a transaction or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import CommandError
from .oplog import DELETE
from .projection import sort_documents
from .update import apply_operators, apply_replacement, is_operator_update, seed_from_filter
from .values import id_key, resolve, sort_key
from .writes import View, change, insert_one, matching


def find_and_modify(view: View, db: str, coll: str, command: Mapping) -> dict:
    """The reply fields ``value`` and ``lastErrorObject`` of one findAndModify."""
    remove, update = bool(command.get("remove")), command.get("update")
    if remove and update is not None:
        raise CommandError(9, "Cannot specify both an update and remove=true")
    if not remove and update is None:
        raise CommandError(9, "Either an update or remove=true must be specified")
    if remove and (command.get("upsert") or command.get("new")):
        raise CommandError(9, "Cannot specify both upsert=true/new=true and remove=true")
    if command.get("arrayFilters"):
        raise CommandError(72, "arrayFilters are not supported by the stand-in")
    query = command.get("query") or {}
    found = sort_documents(matching(view.docs(db, coll), query), command.get("sort"))
    old = found[0] if found else None
    if remove:
        if old is None:
            return {"value": None, "lastErrorObject": {"n": 0}}
        view.remove(db, coll, id_key(old["_id"]))
        view.record(DELETE, db, coll, doc_id=old["_id"])
        return {"value": old, "lastErrorObject": {"n": 1}}
    operators = is_operator_update(update)
    if old is None:
        if not command.get("upsert"):
            return {"value": None, "lastErrorObject": {"n": 0, "updatedExisting": False}}
        seed = seed_from_filter(query)
        new = apply_operators(seed, update)[0] if operators else apply_replacement(seed, update)
        _id = insert_one(view, db, coll, new)
        value = view.docs(db, coll)[id_key(_id)] if command.get("new") else None  # type: ignore[index]
        return {"value": value, "lastErrorObject": {"n": 1, "updatedExisting": False, "upserted": _id}}
    change(view, db, coll, old, update, operators)
    value = view.docs(db, coll)[id_key(old["_id"])] if command.get("new") else old  # type: ignore[index]
    return {"value": value, "lastErrorObject": {"n": 1, "updatedExisting": True}}


def distinct(docs: list[dict], key: Any) -> list:
    """The distinct values of a field, arrays unwound one level, in BSON order."""
    if not isinstance(key, str) or not key:
        raise CommandError(14, "distinct needs a field name as its key")
    seen: dict[Any, Any] = {}
    for doc in docs:
        for value in resolve(doc, key.split(".")):
            for item in value if isinstance(value, list) else [value]:
                seen.setdefault(sort_key(item), item)
    return [seen[k] for k in sorted(seen)]
