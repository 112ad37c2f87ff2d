"""Applying update operators and replacements to a document, copy-on-write.

Stored documents are never mutated: an update returns a new document that shares every
untouched sub-document with the old one, plus the ``updateDescription`` a change event
reports. That is what lets readers use stored documents without holding the store lock.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import Int64, ObjectId
from bson.decimal128 import Decimal128, create_decimal128_context

from .errors import CommandError
from .values import resolve, type_rank, values_equal

_DECIMAL128 = create_decimal128_context()
_INT32 = range(-(2**31), 2**31)


@dataclass
class Description:
    """What an update changed, in change-event form."""

    updated: dict = field(default_factory=dict)
    removed: list = field(default_factory=list)

    def as_event_field(self) -> dict:
        return {"updatedFields": self.updated, "removedFields": self.removed, "truncatedArrays": []}


def is_operator_update(update: Any) -> bool:
    """True for ``{"$set": ...}``-style updates, False for replacement documents."""
    if isinstance(update, list):
        raise CommandError(9, "pipeline-style updates are not supported by the stand-in")
    if not isinstance(update, Mapping):
        raise CommandError(9, "update must be an object")
    keys = list(update)
    operators = [k for k in keys if k.startswith("$")]
    if operators and len(operators) != len(keys):
        raise CommandError(9, "an update cannot mix operators and plain fields")
    return bool(operators)


def apply_operators(doc: Mapping, update: Mapping) -> tuple[dict, Description]:
    """Apply ``$set``/``$unset``/``$inc``; returns the new document and what changed."""
    new = dict(doc)
    description = Description()
    for op, args in update.items():
        handler = _OPERATORS.get(op)
        if handler is None:
            raise CommandError(9, f"Unknown modifier: {op}. Supported: {', '.join(_OPERATORS)}")
        if not isinstance(args, Mapping):
            raise CommandError(9, f"Modifiers operate on fields but {op} was given {args!r}")
        for path, arg in args.items():
            if path == "_id" or path.startswith("_id."):
                if not (op == "$set" and values_equal(doc.get("_id"), arg)):
                    raise CommandError(66, "Performing an update on the path '_id' would modify the immutable field '_id'")
            handler(new, path, arg, description)
    return new, description


def apply_replacement(doc: Mapping, replacement: Mapping) -> dict:
    """The document after a full replacement, keeping ``_id`` first and unchanged."""
    if "_id" in replacement and "_id" in doc and not values_equal(replacement["_id"], doc["_id"]):
        raise CommandError(
            66,
            "After applying the update, the (immutable) field '_id' was found to have been altered to "
            f"_id: {replacement['_id']!r}",
        )
    new = {"_id": doc["_id"]} if "_id" in doc else {}
    new.update((k, v) for k, v in replacement.items() if k != "_id")
    return new


def seed_from_filter(filter_doc: Mapping | None) -> dict:
    """The document an upsert starts from: the filter's equality conditions."""
    seed: dict = {}
    for key, cond in (filter_doc or {}).items():
        if key.startswith("$") or (isinstance(cond, Mapping) and cond and all(str(k).startswith("$") for k in cond)):
            continue
        _set_path(seed, key.split("."), cond)
    return seed


def ensure_id(doc: dict) -> dict:
    """The document with an ``_id`` first, generating an ObjectId when missing."""
    if "_id" in doc:
        return doc
    return {"_id": ObjectId(), **doc}


def same_value(a: Any, b: Any) -> bool:
    """True when writing ``b`` over ``a`` changes nothing (type included)."""
    if isinstance(a, (Mapping, list)) or isinstance(b, (Mapping, list)):
        return type_rank(a) == type_rank(b) and bson.encode({"v": a}) == bson.encode({"v": b})
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------- paths (copy-on-write)


def _parent(doc: dict, parts: list[str], create: bool) -> tuple[Any, str] | None:
    """The container holding the last path element, copying containers along the way."""
    node: Any = doc
    for part in parts[:-1]:
        if isinstance(node, dict):
            child = node.get(part)
            if child is None and part not in node:
                if not create:
                    return None
                child = {}
            elif isinstance(child, Mapping):
                child = dict(child)
            elif isinstance(child, list):
                child = list(child)
            else:
                if not create:
                    return None
                raise CommandError(28, f"Cannot create field '{part}' in element {{{part}: {child!r}}}")
            node[part] = child
        elif isinstance(node, list) and part.isdigit():
            index = int(part)
            if index >= len(node):
                if not create:
                    return None
                node.extend([None] * (index + 1 - len(node)))
                node[index] = {}
            elif isinstance(node[index], Mapping):
                node[index] = dict(node[index])
            elif isinstance(node[index], list):
                node[index] = list(node[index])
            child = node[index]
        else:
            if not create:
                return None
            raise CommandError(28, f"Cannot create field '{part}' in a non-document value")
        node = child
    return node, parts[-1]


def _put(container: Any, key: str, value: Any) -> None:
    if isinstance(container, dict):
        container[key] = value
    elif isinstance(container, list) and key.isdigit():
        index = int(key)
        if index >= len(container):
            container.extend([None] * (index + 1 - len(container)))
        container[index] = value
    else:
        raise CommandError(28, f"Cannot set field '{key}' in a non-document value")


def _set_path(doc: dict, parts: list[str], value: Any) -> None:
    container, key = _parent(doc, parts, create=True)
    _put(container, key, value)


def _write(doc: dict, path: str, value: Any, description: Description) -> None:
    parts = path.split(".")
    current = resolve(doc, parts) if "." in path else ([doc[path]] if path in doc else [])
    if current and same_value(current[0], value):
        return
    _set_path(doc, parts, value)
    description.updated[path] = value


# ---------------------------------------------------------------- operators


def _op_set(doc, path, value, description):
    _write(doc, path, value, description)


def _op_unset(doc, path, _arg, description):
    located = _parent(doc, path.split("."), create=False)
    if located is None:
        return
    container, key = located
    if isinstance(container, dict) and key in container:
        del container[key]
        description.removed.append(path)
    elif isinstance(container, list) and key.isdigit() and int(key) < len(container):
        container[int(key)] = None
        description.updated[path] = None


def _number(value: Any, path: str, op: str) -> Any:
    if type_rank(value) != 3:
        raise CommandError(14, f"Cannot apply {op} to a value of non-numeric type: {path}: {value!r}")
    return value


def add(a: Any, b: Any) -> Any:
    """``a + b`` with MongoDB's type promotion: int32 < int64 < double < decimal."""
    if isinstance(a, Decimal128) or isinstance(b, Decimal128):
        with decimal.localcontext(_DECIMAL128):
            return Decimal128(_to_decimal(a) + _to_decimal(b))
    if isinstance(a, float) or isinstance(b, float):
        return float(a) + float(b)
    result = int(a) + int(b)
    if isinstance(a, Int64) or isinstance(b, Int64) or result not in _INT32:
        return Int64(result)
    return result


def _to_decimal(value: Any) -> decimal.Decimal:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    return decimal.Decimal(int(value))


def _op_inc(doc, path, amount, description):
    _number(amount, path, "$inc")
    current = resolve(doc, path.split("."))
    if current and current[0] is not None:
        value = add(_number(current[0], path, "$inc"), amount)
    else:
        value = amount
    _write(doc, path, value, description)


_OPERATORS = {
    "$set": _op_set,
    "$unset": _op_unset,
    "$inc": _op_inc,
}
