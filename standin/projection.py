"""Sort orders, and projections: the ``$project`` stage, also used for find's ``projection``."""

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


_MISSING = object()


class _Expression:
    """A computed field of a ``$project`` stage: a ``"$field.path"``, ``{"$literal": v}`` or a constant."""

    def __init__(self, spec: Any) -> None:
        if isinstance(spec, Mapping):
            if list(spec) != ["$literal"]:
                raise CommandError(31325, f"the stand-in's $project supports only $literal expressions, not {spec!r}")
            self._path, self._value = None, spec["$literal"]
        elif isinstance(spec, str) and spec.startswith("$"):
            if spec.startswith("$$"):
                raise CommandError(17276, f"the stand-in's $project supports no variables ({spec})")
            self._path, self._value = spec[1:].split("."), None
        else:
            self._path, self._value = None, spec

    def __call__(self, root: Mapping) -> Any:
        if self._path is None:
            return self._value
        node: Any = root
        for part in self._path:
            if not isinstance(node, Mapping) or part not in node:
                values = resolve(root, self._path)  # through arrays, as MongoDB does
                return values if values else _MISSING
            node = node[part]
        return node


def stage_projector(spec: Any) -> Callable[[Mapping], dict]:
    """The aggregation ``$project`` stage: an exclusion, or an inclusion with computed fields.

    As on a real server, ``_id`` is kept unless excluded, values other than numbers and booleans
    are expressions (``"$path"``, ``{"$literal": v}``, constants), and exclusions (other than
    ``_id``) cannot be mixed with inclusions or computed fields.
    """
    if not isinstance(spec, Mapping) or not spec:
        raise CommandError(40177, "$project specification must be an object with at least one field")
    tree = _stage_tree(spec)
    excluded = [key for key, node in _leaves(tree) if node is False and key != "_id"]
    others = [key for key, node in _leaves(tree) if node is not False]
    if excluded and ([key for key in others if key != "_id"] or isinstance(tree.get("_id"), _Expression)):
        raise CommandError(31254, f"Invalid $project: cannot mix exclusion of {excluded[0]} with inclusions or computed fields")
    if excluded or tree == {"_id": False}:
        drop = _path_tree([key for key, node in _leaves(tree) if node is False])
        return lambda doc: _exclude(doc, drop)
    tree.setdefault("_id", True)
    if tree["_id"] is False:
        del tree["_id"]
    if not any(isinstance(node, _Expression) for _, node in _leaves(tree)):
        return lambda doc: _include(doc, tree)  # the common case, and the change stream's hot path
    return lambda doc: _include_computed(doc, tree, doc)


def _stage_tree(spec: Mapping) -> dict:
    tree: dict = {}
    for key, value in spec.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CommandError(31250, f"Invalid $project: path collision at {key}")
        if isinstance(value, bool) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            node[leaf] = bool(value)
        elif isinstance(value, Mapping) and value and not any(str(k).startswith("$") for k in value):
            node[leaf] = _stage_tree(value)
        else:
            node[leaf] = _Expression(value)
    return tree


def _leaves(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, node in tree.items():
        if isinstance(node, dict):
            out += _leaves(node, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", node))
    return out


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


def _include_computed(doc: Mapping, tree: dict, root: Mapping) -> dict:
    out: dict = {}
    for key, value in doc.items():  # included fields keep the document's order
        node = tree.get(key)
        if node is True:
            out[key] = value
        elif isinstance(node, dict):
            if isinstance(value, Mapping):
                out[key] = _include_computed(value, node, root)
            elif isinstance(value, list):
                out[key] = [_include_computed(e, node, root) for e in value if isinstance(e, Mapping)]
    for key, node in tree.items():  # then computed fields, in the stage's order
        if isinstance(node, _Expression):
            value = node(root)
            if value is not _MISSING:
                out[key] = value
        elif isinstance(node, dict) and key not in out:
            sub = _include_computed({}, node, root)
            if sub:
                out[key] = sub
    return out
