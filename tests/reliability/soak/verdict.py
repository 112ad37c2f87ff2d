"""The soak's end checks: every stream ends on its user's last mark; the read model equals the
projection of the documents."""

from __future__ import annotations

import time
from typing import Any

from tests.capture_helpers import actual_state, expected_state, without_empty

CONVERGE_S = 90.0  # a kill -9 just before the end costs a restart, a lease expiry and a catch-up


def converge(soak: Any) -> list[str]:
    """The users whose stream has not seen their last mark within ``CONVERGE_S`` of the last write."""
    deadline = time.monotonic() + CONVERGE_S
    max_exp: dict[str, int] = {}
    while True:
        max_exp.update(soak.ask("report")["max_exp"])
        behind = [uid for uid, mark in soak.writer.last_mark.items() if mark and max_exp.get(uid, 0) < mark]
        if not behind or time.monotonic() > deadline:
            return behind
        time.sleep(1)


class _Documents:
    """What ``expected_state`` reads, from MongoDB through pymongo."""

    def __init__(self, mongo: Any) -> None:
        self.mongo = mongo

    def documents(self, db: str, coll: str) -> list[dict]:
        return list(self.mongo[db][coll].find({}))


def read_model_diff(soak: Any) -> str:
    """'' when the read model holds exactly the documents' projection, else the first differences."""
    want = without_empty(expected_state(_Documents(soak.mongo)))
    have = actual_state(soak.redis, soak.layout)
    want.pop("poison", None)  # its documents are out of range: dead letters, never projected
    differing = sorted(uid for uid in set(want) | set(have) if want.get(uid) != have.get(uid))
    return "" if not differing else f"{len(differing)} users, e.g. " + "; ".join(
        f"{uid}: want {want.get(uid)} have {have.get(uid)}" for uid in differing[:3])
