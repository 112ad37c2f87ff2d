"""A small aggregation pipeline for plain (non change-stream) aggregates.

What ``count_documents`` sends (``$match``, ``$skip``, ``$limit`` and ``$group`` with ``$sum`` of
constants or ``"$field"`` paths) and what ``projector verify --sample`` sends (``$sample`` then
``$project``). ``$sample {size: N}`` returns N documents picked at random without repeats, all of
them (in random order) when there are fewer; its argument checks and error codes are the server's
(src/mongo/db/pipeline/document_source_sample.cpp).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from bson import Decimal128

from .errors import CommandError
from .projection import stage_projector
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
        elif name == "$sample":
            docs = _sample(docs, arg)
        elif name == "$project":
            project = stage_projector(arg)
            docs = [project(d) for d in docs]
        else:
            raise CommandError(40324, f"the stand-in does not support the pipeline stage {name}")
    return docs


def _sample(docs: list, spec: Any) -> list:
    if not isinstance(spec, Mapping):
        raise CommandError(28745, "the $sample stage specification must be an object")
    for name in spec:
        if name != "size":
            raise CommandError(28748, f"unrecognized option to $sample: {name}")
    if "size" not in spec:
        raise CommandError(28749, "$sample stage must specify a size")
    size = spec["size"]
    if isinstance(size, bool) or type_rank(size) != 3:
        raise CommandError(28746, "size argument to $sample must be a number")
    number = size.to_decimal() if isinstance(size, Decimal128) else size
    if number < 0:
        raise CommandError(28747, "size argument to $sample must not be negative")
    return random.sample(docs, min(len(docs), int(number)))


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
