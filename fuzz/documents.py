"""Fuzz normalization and whole change events with arbitrary BSON, decoded as the projector does.

The input bytes are a BSON document (libFuzzer mutates them, guided by coverage of the projector's
modules). It is projected as a task document, as a balance document, and as the fullDocument of
a whole change event. The only acceptable outcomes are a change with a bounded record or a
rejection with a bounded reason; any exception is a crash that libFuzzer reports with its input.

    python -m fuzz.documents -max_total_time=600      # or: make fuzz
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import bson
    from bson import Decimal128, Int64, Timestamp
    from bson.codec_options import CodecOptions, DatetimeConversion
    from bson.errors import BSONError

    from projector.normalize import Rules
    from projector.projection import ECONOMY, TASKS, Rejected, event_change

RULES = Rules()
KINDS = {"generationOutputs": TASKS, "userEconomy": ECONOMY}
# What projector.source.connect asks pymongo for.
CODEC = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO, unicode_decode_error_handler="replace")
RECORD_LIMIT = 2000
REASON_LIMIT = 300


def seeds() -> list[bytes]:
    """A few realistic documents to start from (libFuzzer mutates them)."""
    docs = [
        {"_id": "g1", "masterAccountId": "u1", "status": "processing", "toolId": "flux", "progress": 0.4,
         "costUsd": Decimal128("0.012469"), "requestTimestamp": "2026-01-01T00:00:00Z"},
        {"_id": "g2", "masterAccountId": "u1", "status": "completed", "metadata": {"currentStep": 3, "totalSteps": 9}},
        {"_id": "e1", "masterAccountId": "u1", "usdCredit": Decimal128("1E+6144"), "exp": Int64(2**62)},
        {"_id": "e2", "masterAccountId": "u2", "usdCredit": "1e999999999", "exp": "9" * 60},
    ]
    return [bson.encode(doc) for doc in docs] + [b"S" + bytes(range(256)), b"S" + b"\xff" * 64]


def check(change: object) -> None:
    if change is None:
        return
    if isinstance(change, Rejected):
        if len(change.reason) > REASON_LIMIT:
            raise AssertionError(f"unbounded reason ({len(change.reason)} chars)")
        return
    record = change.record
    if len(record.encode()) > RECORD_LIMIT:
        raise AssertionError(f"unbounded record ({len(record)} chars)")


FIELDS = ["_id", "masterAccountId", "status", "costUsd", "toolId", "toolDisplayName", "notificationPlatform",
          "requestTimestamp", "updatedAt", "responseTimestamp", "progressPercent", "progress", "currentStep",
          "totalSteps", "step", "steps", "current", "total", "metadata", "usdCredit", "balanceUsd", "exp"]


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> object:
    """A value of any type a BSON document can hold, chosen by the fuzzer's bytes."""
    kind = fdp.ConsumeIntInRange(0, 11)
    if kind == 0:
        return fdp.ConsumeInt(8)
    if kind == 1:
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()
    if kind == 2:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 80))
    if kind == 3:
        digits = fdp.ConsumeIntInRange(0, 6000)
        return ("-" if fdp.ConsumeBool() else "") + "9" * digits + fdp.ConsumeUnicodeNoSurrogates(4)
    if kind == 4:
        return Decimal128.from_bid(fdp.ConsumeBytes(16).ljust(16, b"\0"))
    if kind == 5:
        return Int64(fdp.ConsumeIntInRange(-(2**63), 2**63 - 1))
    if kind == 6:
        return bson.DatetimeMS(fdp.ConsumeIntInRange(-(2**62), 2**62))
    if kind == 7:
        return fdp.ConsumeBool()
    if kind == 8 and depth < 3:
        return {name: _value(fdp, depth + 1) for name in fdp.PickValueInList([FIELDS[10:18], ["percent"], []])}
    if kind == 9 and depth < 3:
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    if kind == 10:
        return f"1e{fdp.ConsumeIntInRange(-10**9, 10**9)}"
    return None


def structured(data: bytes) -> dict:
    """A document with the fields the projector reads, each any value (the other half of the inputs)."""
    fdp = atheris.FuzzedDataProvider(data)
    doc = {"_id": "d1", "masterAccountId": "u1", "status": "processing"}
    for _ in range(fdp.ConsumeIntInRange(0, len(FIELDS))):
        doc[fdp.PickValueInList(FIELDS)] = _value(fdp)
    return doc


def one_input(data: bytes) -> None:
    if data[:1] == b"S":  # a structured document built from the rest of the bytes
        doc = structured(data[1:])
    else:
        try:
            doc = bson.decode(data, CODEC)
        except (BSONError, ValueError, OverflowError, IndexError, TypeError):
            return  # not a document pymongo could hand us
    doc.setdefault("_id", "d1")
    for coll in KINDS:
        event = {"operationType": "update", "clusterTime": Timestamp(1_795_000_000, 1), "ns": {"db": "app", "coll": coll},
                 "documentKey": {"_id": doc["_id"]}, "fullDocument": doc}
        check(event_change(event, KINDS, RULES))


def main(argv: list[str]) -> None:
    """Fuzz from the corpus folder on the command line (default ``.fuzz-corpus/documents``,
    git-ignored, so a later run starts where this one ended), seeded with :func:`seeds`."""
    folders = [arg for arg in argv[1:] if not arg.startswith("-")]
    if not folders:
        folders = [str(Path(__file__).resolve().parent.parent / ".fuzz-corpus" / "documents")]
        argv = [*argv, folders[0]]
    corpus = Path(folders[0])
    corpus.mkdir(parents=True, exist_ok=True)
    for n, seed in enumerate(seeds()):
        (corpus / f"seed-{n}").write_bytes(seed)
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
