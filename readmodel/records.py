"""What a snapshot holds, as stored and as served: the one place a task field is added.

A live task is stored as JSON (its visible fields, ``expectedDurationMs`` and ``staleAt``); a
finished task as JSON with its outcome; a balance as ``"usdCredit points exp"``. Reading turns
them into the snapshot the API serves, and derives there what depends on the moment of reading:
which tasks went stale, which finished tasks are still recent, and an estimated progress for a
task whose progress is unknown but whose tool's typical duration is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .text import text, text_map

FINISHED_SHOWN_MS = 10 * 60 * 1000  # how long a finished task stays in the snapshot
LIVE_TASKS_SHOWN = 100  # a snapshot lists at most this many live tasks (the oldest first)
ESTIMATE_CAP_PERCENT = 95.0  # an estimated bar never claims to be done

# Every field of a live task a reader sees: name -> (type, description), the one place a task field is
# declared. The API's response models and OpenAPI page are built from this table; the producer
# (projector.normalize) fills in each field but HISTORY_TASK_FIELDS from the document, in this order
# (tests/test_readmodel.py checks that every layer agrees).
LIVE_TASK_FIELDS: dict[str, tuple[Any, str]] = {
    "generationId": (str, "the generation's document id"),
    "idHash": (str, "first 5 hex characters of sha256(generationId)"),
    "status": (str, "normalized status: lower case, spaces and dashes as underscores"),
    "progressPercent": (float | None, "0..100; for an estimate, computed at read time and capped"),
    "progressSource": (Literal["reported", "status", "estimate"] | None, "where progressPercent comes from"),
    "toolId": (str | None, ""),
    "toolDisplayName": (str | None, ""),
    "costUsd": (str | None, "exact decimal string"),
    "startedAt": (str | None, "ISO-8601 UTC"),
    "updatedAt": (str | None, "ISO-8601 UTC: the last sign of life"),
    "sourcePlatform": (str | None, "telegram, discord, web, ..."),
    "expectedDurationMs": (int | None, "the tool's typical duration, when known"),
    "progressMovedAt": (str | None, "ISO-8601 UTC: when its status or progress last moved (the document's "
                                    "updatedAt at that change); a change that moves neither keeps it"),
}
# A finished task keeps its outcome: these fields of the live shape, plus finishedAt.
FINISHED_TASK_FIELDS = ("generationId", "idHash", "status", "toolId", "toolDisplayName", "costUsd", "startedAt")
# Kept by the read model, not produced from one document: the apply script keeps the stored
# ``progressMovedAt`` while a task's status and progress stay the same (readmodel/scripts/apply.lua).
HISTORY_TASK_FIELDS = ("expectedDurationMs", "progressMovedAt")
TASK_FIELDS = tuple(name for name in LIVE_TASK_FIELDS if name not in HISTORY_TASK_FIELDS)  # what the producer fills in


_ENCODER = json.JSONEncoder(separators=(",", ":"))
# The C encoder, built once (JSONEncoder.encode builds one per call); the same output.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_C_ENCODE = (None if _c_make_encoder is None else
             _c_make_encoder(None, _ENCODER.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False,
                             True))

_fast_dumps: Callable[[Any], bytes] | None
try:  # the fast path of _json; without it the reference encoder does all the work
    import orjson
    _fast_dumps = orjson.dumps
except ImportError:  # pragma: no cover
    _fast_dumps = None


def _reference_json(record: dict[str, Any]) -> str:
    """Compact JSON, ASCII only (``\\u`` escapes), as ``json.dumps(record, separators=(",", ":"))``:
    the reference every stored record is byte-identical to."""
    if _C_ENCODE is None:  # pragma: no cover
        return _ENCODER.encode(record)
    return "".join(_C_ENCODE(record, 0))


def _orjson_writes_as_python(record: dict[str, Any]) -> bool:
    """Whether every float of ``record`` is finite and written without an exponent by ``repr``,
    where orjson writes the same digits (it writes NaN as null and exponents its own way)."""
    for value in record.values():
        if type(value) is float and not (value == 0.0 or 1e-4 <= abs(value) < 1e15):
            return False
    return True


def _json(record: dict[str, Any]) -> str:
    """Compact JSON of a flat record (no cycles possible: its values are strings and numbers),
    byte-identical to :func:`_reference_json`.

    orjson writes it in a fraction of the time, and its output is taken when it is the same:
    printable ASCII (orjson leaves non-ASCII and DEL unescaped) with every float in plain notation.
    Anything else, and whatever orjson refuses (an integer beyond 64 bits, a lone surrogate), goes
    through the reference, which also raises what it raised before.
    """
    if _fast_dumps is not None:
        try:
            out = _fast_dumps(record)
        except TypeError:  # orjson.JSONEncodeError
            out = None
        if out is not None and out.isascii() and b"\x7f" not in out and _orjson_writes_as_python(record):
            return out.decode("ascii")
    return _reference_json(record)


def live_task_record(visible: dict[str, Any], expected_duration_ms: int | None, stale_at_ms: int | None) -> str:
    """The JSON stored for a live task: its visible fields plus what reading derives from.

    A task with no progress of its own but a known typical duration gets ``progressSource``
    "estimate"; its percentage is computed when it is read. ``progressMovedAt`` comes last, as
    this change's time (``updatedAt``, else ``startedAt``): the apply script puts the stored one
    back when the status and progress did not move (``status`` and ``progressPercent`` stay
    adjacent, before ``progressSource``: the script compares the text between them).
    """
    record = {name: visible.get(name) for name in TASK_FIELDS}
    record["expectedDurationMs"] = expected_duration_ms
    if record["progressSource"] is None and expected_duration_ms:
        record["progressSource"] = "estimate"
    record["staleAt"] = stale_at_ms
    record["progressMovedAt"] = visible.get("updatedAt") or visible.get("startedAt")
    return _json(record)


def finished_task_record(visible: dict[str, Any], finished_at_ms: int | None) -> str:
    """The JSON remembered for a task that reached a terminal status: its outcome."""
    record = {name: visible.get(name) for name in FINISHED_TASK_FIELDS}
    record["finishedAt"] = visible.get("updatedAt")
    record["finishedAtMs"] = finished_at_ms
    return _json(record)


def balance_record(usd_credit: str, points: int, exp: int) -> str:
    """The balance as the apply script stores it (three fields, space-separated)."""
    return f"{usd_credit} {points} {exp}"


def epoch_ms(iso: str | None) -> int | None:
    """Epoch milliseconds of an ISO-8601 time the read model stored; None when absent or unreadable."""
    if not iso:
        return None
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)
    except ValueError:
        return None


def estimate_percent(started_at: str | None, expected_ms: int | None, at_ms: int, cap: float) -> float | None:
    """How far along a task probably is: elapsed / typical duration, capped below done."""
    started = epoch_ms(started_at)
    if started is None or not expected_ms or expected_ms <= 0:
        return None
    fraction = max(0, at_ms - started) / expected_ms
    return round(min(cap, fraction * 100), 1)


@dataclass(frozen=True)
class View:
    """How a snapshot is read: at which moment, with which limits."""

    now_ms: int
    estimate_cap: float = ESTIMATE_CAP_PERCENT
    live_tasks_shown: int = LIVE_TASKS_SHOWN


def decode_snapshot(uid: str, user: dict[Any, Any], tasks: dict[Any, Any], finished: list[Any], view: View) -> dict[str, Any]:
    """The snapshot as the API serves it, from the raw replies of one user's keys.

    Hides tasks that went stale since the last sweep and finished tasks older than
    ``FINISHED_SHOWN_MS``; lists at most ``view.live_tasks_shown`` live tasks (oldest first) and
    says in ``liveTasksOmitted`` how many more there are; fills estimated progress.
    """
    now_ms = view.now_ms
    user = text_map(user)
    recent = []
    for raw in finished:
        record = json.loads(raw)
        finished_ms = record.pop("finishedAtMs", None)
        if finished_ms is None or now_ms - finished_ms <= FINISHED_SHOWN_MS:
            recent.append(record)
    live = []
    for raw in tasks.values():
        record = json.loads(raw)
        stale_at = record.pop("staleAt", None)
        if stale_at is not None and stale_at <= now_ms:
            continue
        if record.get("progressSource") == "estimate":
            record["progressPercent"] = estimate_percent(record.get("startedAt"), record.get("expectedDurationMs"),
                                                         now_ms, view.estimate_cap)
        live.append(record)
    live.sort(key=lambda t: (t.get("startedAt") or "", t["generationId"]))
    omitted = max(0, len(live) - view.live_tasks_shown)
    return {
        "masterAccountId": uid,
        "version": int(user.get("version", 0)),
        "updatedAt": user.get("updatedAt"),
        "balance": {
            "usdCredit": user.get("usdCredit", "0"),
            "points": int(user.get("points", 0)),
            "exp": int(user.get("exp", 0)),
        },
        "liveTasks": live[: view.live_tasks_shown],
        "liveTasksOmitted": omitted,
        "recentlyFinished": recent,
    }


def heartbeat_ms(value: Any) -> int | None:
    """The projector's heartbeat (epoch ms) from its raw reply; None when absent or unreadable."""
    if value is None:
        return None
    try:
        return int(text(value))
    except ValueError:
        return None
