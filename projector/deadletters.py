"""Documents that cannot be projected: kept, bounded, in a Redis stream for ops to read."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bson import json_util

from readmodel import Layout
from readmodel.text import text, text_map

from .projection import Rejected

MAXLEN = 10_000
DOCUMENT_LIMIT = 4096  # characters of the raw document kept


def encode_document(document: Any, limit: int = DOCUMENT_LIMIT) -> str:
    """The raw document as relaxed extended JSON, cut to ``limit`` characters."""
    try:
        encoded = json_util.dumps(document, json_options=json_util.RELAXED_JSON_OPTIONS)
    except Exception as exc:
        encoded = f"<unencodable {type(document).__name__}: {str(exc)[:200]}>"
    return encoded if len(encoded) <= limit else encoded[: limit - 1] + "…"


class DeadLetters:
    """XADD rejected documents (MAXLEN ~ 10000) and read them back, newest first."""

    def __init__(self, redis: Any, layout: Layout, maxlen: int = MAXLEN) -> None:
        self.redis = redis
        self.layout = layout
        self.maxlen = maxlen

    def add(self, rejected: Iterable[Rejected], collections: dict[str, str], now_iso: str) -> int:
        """Record each rejection (``collections`` maps kind to collection name); returns how many."""
        pipe = self.redis.pipeline(transaction=False)
        count = 0
        for item in rejected:
            fields = {
                "at": now_iso,
                "collection": collections.get(item.kind, item.kind),
                "id": item.doc_id or "",
                "reason": item.reason,
                "document": encode_document(item.document),
            }
            pipe.xadd(self.layout.deadletters, fields, maxlen=self.maxlen, approximate=True)
            count += 1
        if count:
            pipe.execute()
        return count

    def recent(self, limit: int = 20) -> list[dict[str, str]]:
        """The newest ``limit`` entries, newest first, each with its stream id as ``entry``."""
        rows = self.redis.xrevrange(self.layout.deadletters, count=limit)
        return [{"entry": text(entry), **text_map(fields)} for entry, fields in rows]

    def total(self) -> int:
        return int(self.redis.xlen(self.layout.deadletters))
