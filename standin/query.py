"""Query filters, sort order and projections over BSON-like documents.

A filter is compiled once into a predicate (used by find, count, update, delete and by a
change stream's ``$match``). Values compare the way MongoDB compares them: numbers of any
BSON type compare by value, other types compare within their own type only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from bson import Binary, ObjectId, Timestamp
from bson.decimal128 import Decimal128
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.regex import Regex

from .errors import CommandError

Predicate = Callable[[Mapping], bool]


def _always(_doc: Mapping) -> bool:
    return True


# ---------------------------------------------------------------- comparing values


def type_rank(value: Any) -> int:
    """The BSON comparison order of a value's type (null < numbers < strings < ...)."""
    if value is None:
        return 2
    if isinstance(value, bool):
        return 9
    if isinstance(value, (int, float, Decimal128)):
        return 3
    if isinstance(value, str):
        return 4
    if isinstance(value, Mapping):
        return 5
    if isinstance(value, (list, tuple)):
        return 6
    if isinstance(value, (bytes, Binary)):
        return 7
    if isinstance(value, ObjectId):
        return 8
    if isinstance(value, datetime):
        return 10
    if isinstance(value, Timestamp):
        return 11
    if isinstance(value, (Regex, re.Pattern)):
        return 12
    if isinstance(value, MinKey):
        return 1
    if isinstance(value, MaxKey):
        return 13
    return 14


def sort_key(value: Any) -> tuple:
    """A key that orders values like MongoDB orders them."""
    rank = type_rank(value)
    if rank == 3:
        if isinstance(value, Decimal128):
            value = value.to_decimal()
        if value != value:  # NaN sorts below every number
            return (3, 0, 0)
        return (3, 1, value)
    if rank in (4, 9):
        return (rank, value)
    if rank == 5:
        return (5, tuple((k, sort_key(v)) for k, v in value.items()))
    if rank == 6:
        return (6, tuple(sort_key(v) for v in value))
    if rank == 7:
        return (7, len(value), bytes(value))
    if rank == 8:
        return (8, value.binary)
    if rank == 10:
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return (10, value)
    if rank == 11:
        return (11, value.time, value.inc)
    if rank in (1, 2, 13):
        return (rank,)
    return (rank, repr(value))


_SIMPLE = (str, ObjectId)


def values_equal(a: Any, b: Any) -> bool:
    """Equality as MongoDB sees it: 1 == 1.0 == Int64(1) == Decimal128("1"), True != 1."""
    ta = type(a)
    if ta is type(b) and (ta in _SIMPLE or ta is int):
        return a == b
    return sort_key(a) == sort_key(b)


def id_key(value: Any) -> Any:
    """A hashable key for an _id, equal for _id values MongoDB considers equal."""
    if isinstance(value, (str, ObjectId)):
        return value
    rank = type_rank(value)
    if rank == 3:
        number = value.to_decimal() if isinstance(value, Decimal128) else value
        return number if isinstance(number, (int, Decimal)) else Decimal(repr(number))
    return sort_key(value)


# ---------------------------------------------------------------- paths


def resolve(doc: Any, parts: list[str]) -> list:
    """Every value a dotted path reaches, descending into arrays like MongoDB does."""
    node = doc
    for part in parts:  # fast path: plain sub-documents all the way down
        if isinstance(node, Mapping):
            if part not in node:
                return []
            node = node[part]
        else:
            break
    else:
        return [node]
    out: list = []
    _resolve(doc, parts, 0, out)
    return out


def _resolve(value: Any, parts: list[str], i: int, out: list) -> None:
    if i == len(parts):
        out.append(value)
        return
    part = parts[i]
    if isinstance(value, Mapping):
        if part in value:
            _resolve(value[part], parts, i + 1, out)
    elif isinstance(value, list):
        if part.isdigit() and int(part) < len(value):
            _resolve(value[int(part)], parts, i + 1, out)
        for element in value:
            if isinstance(element, Mapping):
                _resolve(element, parts, i, out)


def _expanded(values: list) -> list:
    """Candidate values plus the elements of candidate arrays."""
    out = list(values)
    for v in values:
        if isinstance(v, list):
            out.extend(v)
    return out


# ---------------------------------------------------------------- filters


def compile_filter(spec: Mapping | None) -> Predicate:
    """Turn a query filter into a predicate on documents."""
    if not spec:
        return _always
    if not isinstance(spec, Mapping):
        raise CommandError(2, "filter must be an object")
    clauses = [_compile_clause(key, cond) for key, cond in spec.items()]
    if len(clauses) == 1:
        return clauses[0]
    return lambda doc: all(clause(doc) for clause in clauses)


def _compile_clause(key: str, cond: Any) -> Predicate:
    if key in ("$and", "$or", "$nor"):
        if not isinstance(cond, list) or not cond:
            raise CommandError(2, f"{key} argument must be a non-empty array")
        subs = [compile_filter(sub) for sub in cond]
        if key == "$and":
            return lambda doc: all(sub(doc) for sub in subs)
        if key == "$or":
            return lambda doc: any(sub(doc) for sub in subs)
        return lambda doc: not any(sub(doc) for sub in subs)
    if key == "$comment":
        return _always
    if key.startswith("$"):
        raise CommandError(2, f"unknown top level operator: {key}")
    parts = key.split(".")
    test = _compile_condition(cond)
    if len(parts) == 1:

        def one_field(doc: Mapping) -> bool:
            return test([doc[key]] if key in doc else [])

        return one_field
    return lambda doc: test(resolve(doc, parts))


ValuesTest = Callable[[list], bool]


def _is_operator_doc(cond: Any) -> bool:
    return isinstance(cond, Mapping) and bool(cond) and all(str(k).startswith("$") for k in cond)


def _compile_condition(cond: Any) -> ValuesTest:
    if isinstance(cond, (Regex, re.Pattern)):
        return _regex_test(cond)
    if not _is_operator_doc(cond):
        return _eq_test(cond)
    tests = [_compile_operator(op, arg, cond) for op, arg in cond.items() if op != "$options"]
    if len(tests) == 1:
        return tests[0]
    return lambda values: all(test(values) for test in tests)


def _eq_test(target: Any) -> ValuesTest:
    if type(target) is str:
        return _in_strings_test(frozenset([target]))
    if target is None:
        return lambda values: not values or any(v is None for v in _expanded(values))
    if isinstance(target, (Regex, re.Pattern)):
        return _regex_test(target)
    return lambda values: any(values_equal(v, target) for v in _expanded(values))


def _in_strings_test(targets: frozenset) -> ValuesTest:
    """Equality with one of some strings: a set lookup (strings equal only strings)."""

    def test(values: list) -> bool:
        for v in values:
            if type(v) is str:
                if v in targets:
                    return True
            elif isinstance(v, list) and any(type(e) is str and e in targets for e in v):
                return True
        return False

    return test


def _regex_test(pattern: Any, options: str = "") -> ValuesTest:
    if isinstance(pattern, Regex):
        pattern = pattern.try_compile()
    if not isinstance(pattern, re.Pattern):
        flags = 0
        for letter, flag in (("i", re.I), ("m", re.M), ("s", re.S), ("x", re.X)):
            if letter in options:
                flags |= flag
        pattern = re.compile(pattern, flags)
    return lambda values: any(isinstance(v, str) and pattern.search(v) for v in _expanded(values))


_COMPARE = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}


def _compile_operator(op: str, arg: Any, cond: Mapping) -> ValuesTest:
    if op == "$eq":
        return _eq_test(arg)
    if op == "$ne":
        eq = _eq_test(arg)
        return lambda values: not eq(values)
    if op in ("$in", "$nin"):
        if not isinstance(arg, list):
            raise CommandError(2, f"{op} needs an array")
        if all(type(target) is str for target in arg):
            member = _in_strings_test(frozenset(arg))
            return member if op == "$in" else lambda values: not member(values)
        tests = [_eq_test(target) for target in arg]
        if op == "$in":
            return lambda values: any(test(values) for test in tests)
        return lambda values: not any(test(values) for test in tests)
    if op in _COMPARE:
        compare = _COMPARE[op]
        rank, key = type_rank(arg), sort_key(arg)
        return lambda values: any(
            type_rank(v) == rank and compare(sort_key(v), key) for v in _expanded(values)
        )
    if op == "$exists":
        wanted = bool(arg)
        return lambda values: bool(values) == wanted
    if op == "$regex":
        return _regex_test(arg, cond.get("$options", ""))
    if op == "$not":
        inner = _compile_condition(arg)
        return lambda values: not inner(values)
    if op == "$size":
        return lambda values: any(isinstance(v, list) and len(v) == arg for v in values)
    if op == "$elemMatch":
        inner_doc = compile_filter(arg) if not _is_operator_doc(arg) else None
        inner_values = _compile_condition(arg) if inner_doc is None else None

        def elem_match(values: list) -> bool:
            for v in values:
                if isinstance(v, list):
                    for element in v:
                        if inner_doc is not None and isinstance(element, Mapping) and inner_doc(element):
                            return True
                        if inner_values is not None and inner_values([element]):
                            return True
            return False

        return elem_match
    raise CommandError(2, f"unknown operator: {op}")


# ---------------------------------------------------------------- sort and projection


def sort_documents(docs: list, spec: Mapping | None) -> list:
    """Sort documents in place by a sort specification like ``{"_id": 1}``."""
    if not spec:
        return docs
    for field, direction in reversed(list(spec.items())):
        reverse = _direction(direction) < 0
        if field == "$natural":
            if reverse:
                docs.reverse()
            continue
        parts = field.split(".")
        docs.sort(key=lambda doc, parts=parts: _first_key(doc, parts), reverse=reverse)
    return docs


def _direction(direction: Any) -> int:
    if isinstance(direction, (int, float)) and not isinstance(direction, bool) and direction in (1, -1):
        return int(direction)
    raise CommandError(2, f"bad sort direction {direction!r}: use 1 or -1")


def _first_key(doc: Mapping, parts: list[str]) -> tuple:
    values = resolve(doc, parts)
    return sort_key(values[0]) if values else (2,)


def projector(spec: Mapping | None) -> Callable[[Mapping], Mapping] | None:
    """A function applying an inclusion or exclusion projection, or None for no projection."""
    if not spec:
        return None
    keep_id = _truthy(spec.get("_id", 1))
    fields = {k: _truthy(v) for k, v in spec.items() if k != "_id"}
    included = [k for k, on in fields.items() if on]
    excluded = [k for k, on in fields.items() if not on]
    if included and excluded:
        raise CommandError(2, "cannot mix inclusion and exclusion in a projection")
    if included:
        tree = _path_tree(included)
        if keep_id:
            tree["_id"] = True
        return lambda doc: _include(doc, tree)
    tree = _path_tree(excluded)
    if not keep_id:
        tree["_id"] = True
    return lambda doc: _exclude(doc, tree)


def _truthy(value: Any) -> bool:
    if isinstance(value, (bool, int, float)):
        return bool(value)
    raise CommandError(2, f"projection values must be 0/1 or booleans, not {value!r}")


def _path_tree(paths: list[str]) -> dict:
    tree: dict = {}
    for path in paths:
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if child is True:
                break
            node = node.setdefault(part, {})
        else:
            node[leaf] = True
    return tree


def _include(doc: Mapping, tree: dict) -> dict:
    out = {}
    for key, value in doc.items():
        sub = tree.get(key)
        if sub is True:
            out[key] = value
        elif sub:
            if isinstance(value, Mapping):
                out[key] = _include(value, sub)
            elif isinstance(value, list):
                out[key] = [_include(e, sub) for e in value if isinstance(e, Mapping)]
    return out


def _exclude(doc: Mapping, tree: dict) -> dict:
    out = {}
    for key, value in doc.items():
        sub = tree.get(key)
        if sub is True:
            continue
        if sub and isinstance(value, Mapping):
            out[key] = _exclude(value, sub)
        elif sub and isinstance(value, list):
            out[key] = [_exclude(e, sub) if isinstance(e, Mapping) else e for e in value]
        else:
            out[key] = value
    return out
