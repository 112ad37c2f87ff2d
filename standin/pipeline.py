"""A small aggregation pipeline for plain (non change-stream) aggregates.

Exactly what ``count_documents`` sends: ``$match``, ``$skip``, ``$limit`` and ``$group`` with
``$sum`` of constants or ``"$field"`` paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import CommandError
from .query import compile_filter
from .update import add
from .values import id_key, resolve, type_rank


def run_pipeline(docs: list, pipeline: list) -> list:
    """Apply the stages to documents and return the resulting documents."""
    for stage in pipeline:
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise CommandError(40323, "a pipeline stage must be an object with exactly one field")
        (name, arg), = stage.items()
        if name == "$match":
            predicate = compile_filter(arg)
            docs = [d for d in docs if predicate(d)]
        elif name == "$skip":
            docs = docs[int(arg):]
        elif name == "$limit":
            docs = docs[: int(arg)]
        elif name == "$group":
            docs = _group(docs, arg)
        else:
            raise CommandError(40324, f"the stand-in does not support the pipeline stage {name}")
    return docs


def _value(doc: Mapping, expression: Any) -> Any:
    if isinstance(expression, str) and expression.startswith("$"):
        values = resolve(doc, expression[1:].split("."))
        return values[0] if values else None
    if isinstance(expression, Mapping):
        return {k: _value(doc, v) for k, v in expression.items()}
    return expression


def _group(docs: list, spec: Mapping) -> list:
    if "_id" not in spec:
        raise CommandError(15955, "a $group specification must include an _id")
    accumulators = {k: v for k, v in spec.items() if k != "_id"}
    for name, acc in accumulators.items():
        if not isinstance(acc, Mapping) or len(acc) != 1 or next(iter(acc)) not in _ACCUMULATE:
            raise CommandError(40234, f"unsupported accumulator for {name}: {acc!r}")
    groups: dict[Any, dict] = {}
    for doc in docs:
        group_id = _value(doc, spec["_id"])
        key = id_key(group_id)
        out = groups.get(key)
        if out is None:
            out = groups[key] = {"_id": group_id}
        for name, acc in accumulators.items():
            (op, expression), = acc.items()
            _ACCUMULATE[op](out, name, _value(doc, expression), name not in out)
    return list(groups.values())


def _sum(out: dict, name: str, value: Any, first: bool) -> None:
    current = 0 if first else out[name]
    numeric = type_rank(value) == 3
    out[name] = add(current, value) if numeric else current


_ACCUMULATE = {"$sum": _sum}
