"""The stored resume point: written only after the writes it covers, and only by the leader."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bson import json_util

from readmodel import Layout, scripts
from readmodel.fences import Fences
from readmodel.text import text_map

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Checkpoint:
    """Where tailing resumes: the resume token (None: resume at ``position`` by cluster time).

    ``masters`` (:func:`readmodel.connect.masters`) says which Redis masters held the writes it
    covers: when they are not the masters any more, those writes cannot be trusted.
    """

    token: Mapping[str, Any] | None
    position: str
    at_ms: int
    fence: int = 0
    masters: str = ""


class CheckpointStore:
    """Loads and (fenced) saves the checkpoint hash of one layout."""

    def __init__(self, redis: Any, layout: Layout, fences: Fences | None = None) -> None:
        self.redis = redis
        self.layout = layout
        fences = fences or Fences(redis, layout)
        self._audit = fences.keys(layout.checkpoint)[1:]  # tests only: the checkpoint slot's audit list

    def load(self) -> Checkpoint | None:
        """The stored checkpoint; None when there is none or it cannot be read (then: resync)."""
        raw = text_map(self.redis.hgetall(self.layout.checkpoint))
        if not raw:
            return None
        try:
            token = json_util.loads(raw["token"]) if raw.get("token") else None
            if token is not None and not isinstance(token, Mapping):
                raise ValueError("token is not a document")
            return Checkpoint(token, raw["position"], int(raw.get("atMs", 0)), int(raw.get("fence", 0)),
                              raw.get("masters", ""))
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("ignoring an unreadable checkpoint (%s): a resync will rebuild the read model", exc)
            return None

    def save(self, token: Mapping[str, Any] | None, position: str, fence: int, now_ms: int, masters: str = "",
             lag_ms: int | None = None) -> bool:
        """Record the resume point and announce it; False when ``fence`` is no longer current
        (leadership lost). ``lag_ms``: how far behind the source the covered writes were applied
        (default: ``now_ms`` minus the position's time, which has whole seconds only)."""
        if lag_ms is None:
            lag_ms = max(0, now_ms - int(position.split(".")[0]) * 1000)
        encoded = "" if token is None else json_util.dumps(token)
        done = scripts.call(self.redis, scripts.CHECKPOINT, [self.layout.fence, self.layout.checkpoint, *self._audit],
                            [fence, encoded, position, now_ms, masters, max(0, int(lag_ms)), self.layout.applied])
        return bool(int(done))

    def clear(self) -> None:
        self.redis.delete(self.layout.checkpoint)
