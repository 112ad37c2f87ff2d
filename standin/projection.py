"""Sort orders and inclusion/exclusion projections for query results."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .errors import CommandError
from .values import resolve, sort_key


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
    keep_id = truthy(spec.get("_id", 1))
    fields = {k: truthy(v) for k, v in spec.items() if k != "_id"}
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


def truthy(value: Any) -> bool:
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
