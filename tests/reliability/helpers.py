"""The reliability suite's exact comparison of read model and documents (its writer:
:class:`tests.writers.MixedWriter`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from projector.values import document_id
from tests.capture_helpers import actual_state, expected_state, without_empty


@dataclass
class Diff:
    lost: list[tuple[str, str]] = field(default_factory=list)  # live in the documents, absent in Redis
    phantom: list[tuple[str, str]] = field(default_factory=list)  # in Redis, not live in the documents
    wrong: list[tuple[str, str, object, object]] = field(default_factory=list)  # different status/progress
    balances: list[tuple[str, object, object]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.phantom or self.wrong or self.balances)

    def __str__(self) -> str:
        return (f"lost={len(self.lost)} phantom={len(self.phantom)} wrong={len(self.wrong)} "
                f"balances={len(self.balances)}\n lost: {self.lost[:20]}\n phantom: {self.phantom[:20]}\n"
                f" wrong: {self.wrong[:20]}\n balances: {self.balances[:20]}")


class _UsableIds:
    """The stand-in's documents minus those whose ``_id`` the worker rejects (``expected_state``
    checks a task's _id through ``normalize_task``, but a balance's _id nowhere)."""

    def __init__(self, standin) -> None:
        self.standin = standin

    def documents(self, db: str, coll: str) -> list[dict]:
        return [doc for doc in self.standin.documents(db, coll) if document_id(doc.get("_id")) is not None]


def compare(standin, redis, layout) -> Diff:
    """Read model vs the projection of the stand-in's documents, task by task."""
    expected = without_empty(expected_state(_UsableIds(standin)))
    actual = actual_state(redis, layout)
    diff = Diff()
    want = {(u, g): v for u, e in expected.items() for g, v in e["tasks"].items()}
    have = {(u, g): v for u, e in actual.items() for g, v in e["tasks"].items()}
    diff.lost = sorted(set(want) - set(have))
    diff.phantom = sorted(set(have) - set(want))
    diff.wrong = [(u, g, want[u, g], have[u, g]) for u, g in sorted(set(want) & set(have)) if want[u, g] != have[u, g]]
    zero = ("0", 0, 0)
    for uid in sorted(set(expected) | set(actual)):
        a = expected.get(uid, {}).get("balance", zero)
        b = actual.get(uid, {}).get("balance", zero)
        if a != b:
            diff.balances.append((uid, a, b))
    return diff


def resync_seconds(log_text: str) -> list[float]:
    """Durations of every finished resync in a projector log."""
    return [float(s) for s in re.findall(r"resync done: .*?, ([0-9.]+) s", log_text)]
