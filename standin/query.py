"""Query filters compiled into predicates.

A filter is compiled once into a predicate (used by find, count, update, delete and by a
change stream's ``$match``). Values compare the way MongoDB compares them: numbers of any
BSON type compare by value, other types compare within their own type only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from bson.regex import Regex

from .errors import CommandError
from .values import resolve, sort_key, type_rank, values_equal

Predicate = Callable[[Mapping], bool]


def _always(_doc: Mapping) -> bool:
    return True


def _expanded(values: list) -> list:
    """Candidate values plus the elements of candidate arrays."""
    out = list(values)
    for v in values:
        if isinstance(v, list):
            out.extend(v)
    return out


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
    if key == "$or":
        if not isinstance(cond, list) or not cond:
            raise CommandError(2, f"{key} argument must be a non-empty array")
        subs = [compile_filter(sub) for sub in cond]
        return lambda doc: any(sub(doc) for sub in subs)
    if key == "$comment":
        return _always
    if key.startswith("$"):
        raise CommandError(2, f"unknown top level operator (or one the stand-in does not support): {key}")
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
        raise CommandError(2, "the stand-in does not support regular expressions in filters")
    if not _is_operator_doc(cond):
        return _eq_test(cond)
    tests = [_compile_operator(op, arg) for op, arg in cond.items()]
    if len(tests) == 1:
        return tests[0]
    return lambda values: all(test(values) for test in tests)


def _eq_test(target: Any) -> ValuesTest:
    if type(target) is str:
        return _in_strings_test(frozenset([target]))
    if target is None:
        return lambda values: not values or any(v is None for v in _expanded(values))
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


_COMPARE = {
    "$gt": lambda a, b: a > b,
    "$lt": lambda a, b: a < b,
}


def _compile_operator(op: str, arg: Any) -> ValuesTest:
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
    raise CommandError(2, f"unknown operator (or one the stand-in does not support): {op}")
