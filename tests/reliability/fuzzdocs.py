"""A seeded generator of malformed and odd documents, each labelled by construction.

Every document carries a marker ``fz`` right after its ``_id`` (so it survives the dead-letter
record's 4096-character cut). ``bad`` documents must be dead-lettered with a reason naming
``field``; the others, however odd, must be projected.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from bson import Decimal128, Int64

from projector.normalize import Invalid, normalize_balance, normalize_task
from projector.values import document_id
from tests.capture_helpers import ECONOMY, TASKS

NAN = float("nan")


@dataclass
class Fuzzed:
    marker: str
    collection: str
    doc: dict
    bad_field: str | None  # None: a good (if odd) document


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _junk(r: random.Random, depth: int = 0) -> Any:
    """Nested garbage of any BSON type."""
    choices = [
        lambda: r.randint(-(2**40), 2**40), lambda: r.random() * 1e6, lambda: NAN, lambda: float("inf"),
        lambda: None, lambda: True, lambda: "".join(r.choice("ab%$.{}|\x1f\u00e9\u4e2d ") for _ in range(r.randint(0, 12))),
        lambda: Decimal128("NaN"), lambda: Int64(r.randint(0, 9)), lambda: b"\x00\xff",
    ]
    if depth < 3:
        choices += [lambda: [_junk(r, depth + 1) for _ in range(r.randint(0, 4))],
                    lambda: {f"k{i}": _junk(r, depth + 1) for i in range(r.randint(0, 4))}]
    return r.choice(choices)()


def _huge(r: random.Random) -> str:
    return "H" * r.randint(50_000, 300_000)


class Generator:
    """Documents for both collections; ``bad_ratio`` of them cannot be projected."""

    def __init__(self, seed: int, bad_ratio: float = 0.5, huge_every: int = 400) -> None:
        self.r = random.Random(seed)
        self.n = 0
        self.bad_ratio = bad_ratio
        self.huge_every = huge_every

    def next(self) -> Fuzzed:
        self.n += 1
        marker = f"F{self.n}"
        r = self.r
        collection = TASKS if r.random() < 0.7 else ECONOMY
        bad = r.random() < self.bad_ratio
        if collection == TASKS:
            doc, field = self._task(marker, bad)
        else:
            doc, field = self._balance(marker, bad)
        if self.n % self.huge_every == 0:
            doc["notes"] = _huge(r)  # a huge string in a field nobody reads
        fuzzed = Fuzzed(marker, "generationOutputs" if collection == TASKS else "userEconomy", doc, field)
        self._check_label(fuzzed, collection)
        return fuzzed

    def _ident(self, marker: str, bad: bool) -> tuple[dict, str | None]:
        if not bad:
            return {"_id": self.r.choice([marker, f"gen {marker}|{{x}}"])}, None
        return {"_id": self.r.choice([{"nested": marker}, 1.5 + self.n, f"{marker}" + "i" * 300, True, ""])}, "_id"

    def _task(self, marker: str, bad: bool) -> tuple[dict, str | None]:
        r = self.r
        which = r.choice(["_id", "masterAccountId", "status", "costUsd"]) if bad else None
        head, field = self._ident(marker, which == "_id")
        doc: dict[str, Any] = {**head, "fz": marker}
        doc["masterAccountId"] = r.choice(
            [None, 42, "bad owner!", {"id": "u1"}, "x" * 200, ""]) if which == "masterAccountId" else f"fu{r.randrange(40)}"
        if which == "status":
            doc["status"] = r.choice([None, 42, ["processing"], "", "   ", {"s": "running"}])
        else:
            doc["status"] = r.choice(["processing", "queued", "Rendering-Step 2", "\u5904\u7406\u4e2d", "COMPLETED",
                                      "cancelled by user", "weird_" + marker])
        if which == "costUsd":
            doc["costUsd"] = r.choice([NAN, "lots", Decimal128("NaN"), Decimal128("Infinity"), {"usd": 1}, float("inf")])
        elif r.random() < 0.5:
            doc["costUsd"] = r.choice([Decimal128("0.012469"), 0.1, 3, "$0.5", None])
        # Odd but harmless everywhere: garbage progress, junk dates, nested junk, long names.
        doc["requestTimestamp"] = r.choice([_now_iso(), "not a date", NAN, None, _now_iso()])
        doc["updatedAt"] = _now_iso()
        doc["toolId"] = r.choice(["flux", 7, None, _junk(r)])
        doc[r.choice(["progress", "progressPercent", "currentStep"])] = _junk(r)
        doc["metadata"] = r.choice([_junk(r), {"progress": _junk(r), "toolDisplayName": "T" * r.randint(0, 500)}])
        doc["sourcePlatform"] = _junk(r)
        return doc, field if field else which

    def _balance(self, marker: str, bad: bool) -> tuple[dict, str | None]:
        r = self.r
        which = r.choice(["_id", "masterAccountId", "usdCredit", "exp"]) if bad else None
        head, field = self._ident(marker, which == "_id")
        doc: dict[str, Any] = {**head, "fz": marker}
        # One balance document per user: two for one user would make "the" balance ambiguous.
        doc["masterAccountId"] = r.choice([None, 7, "bad owner!", ""]) if which == "masterAccountId" else f"fe{marker}"
        if which == "usdCredit":
            doc["usdCredit"] = r.choice([NAN, "lots", Decimal128("NaN"), [1, 2], {"v": 1}, Decimal128("-Infinity")])
        else:
            key = r.choice(["usdCredit", "usdCredit", "balanceUsd", None])
            if key:
                doc[key] = r.choice([Decimal128("1.250000"), 0.1, 12, "3.5", Decimal128("1E+2")])
        if which == "exp":
            doc["exp"] = r.choice(["abc", NAN, {"e": 1}, [3], float("inf")])
        else:
            doc["exp"] = r.choice([Int64(5), 3.7, Decimal128("9"), "12", None])
        doc["junk"] = _junk(r)
        return doc, field if field else which

    @staticmethod
    def _check_label(fuzzed: Fuzzed, collection: str) -> None:
        """The label must agree with the pure normalizer (else the generator is wrong)."""
        doc = fuzzed.doc
        if collection == TASKS:
            outcome = normalize_task(doc) if document_id(doc["_id"]) else Invalid("missing or unusable _id")
        else:
            outcome = normalize_balance(doc) if document_id(doc["_id"]) else Invalid("missing or unusable _id")
        rejected = isinstance(outcome, Invalid)
        assert rejected == (fuzzed.bad_field is not None), (fuzzed, outcome)
        if rejected:
            assert fuzzed.bad_field in outcome.reason, (fuzzed.bad_field, outcome.reason)
