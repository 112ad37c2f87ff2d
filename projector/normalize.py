"""Turn raw MongoDB documents into normalized tasks and balances (one value at a time:
:mod:`.values`; times: :mod:`.times`).

Pure functions: no I/O, no clock reads. Bad input never raises out of here; it comes back as a
:class:`Invalid` with a reason that the worker dead-letters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .progress import read_progress
from .times import Moment, moment
from .values import (
    MAX_DISPLAY_NAME,
    MAX_PLATFORM,
    MAX_TOOL_ID,
    FieldError,
    account_id,
    clip_text,
    counter,
    decimal_text,
    describe,
    document_id,
    id_hash,
    is_mapping,
    money,
    money_text,
    normalize_status,
    points_for,
)

# Statuses seen in the wild, normalized (lower case, spaces and dashes as underscores).
QUEUED_STATUSES = frozenset({"pending", "queued", "waiting"})
RUNNING_STATUSES = frozenset({"processing", "running"})
TERMINAL_STATUSES = frozenset(
    {
        "completed",
        "success",
        "succeeded",
        "failed",
        "payment_failed",
        "cancelled",
        "cancelled_by_user",
        "timeout",
        "error",
    }
)
SUCCESS_STATUSES = frozenset({"completed", "success", "succeeded"})  # terminal and successful
DEFAULT_POINTS_RATE = Decimal("0.00037")

@dataclass(frozen=True)
class Rules:
    """What the normalizer needs to know that is configuration, not data.

    A status in none of the sets is *unknown*: it is shown as live with its own name and no
    progress (the user sees "something is happening"), and it leaves the snapshot when it goes
    stale like any other live task.
    """

    queued: frozenset[str] = QUEUED_STATUSES
    running: frozenset[str] = RUNNING_STATUSES
    terminal: frozenset[str] = TERMINAL_STATUSES
    succeeded: frozenset[str] = SUCCESS_STATUSES  # terminal statuses whose duration is learned
    points_rate: Decimal = DEFAULT_POINTS_RATE
    stale_after_ms: int = 24 * 3600 * 1000

    def is_terminal(self, status: str) -> bool:
        return status in self.terminal


@dataclass(frozen=True)
class Invalid:
    """A document that cannot be normalized, with the reason why (the projection turns it into a
    :class:`~projector.projection.Rejected`, which is dead-lettered)."""

    reason: str


@dataclass(frozen=True)
class Task:
    """One generation task as every platform shows it.

    ``visible`` holds the fields a reader sees, named and ordered as
    :data:`readmodel.records.TASK_FIELDS` declares them (the one table of task fields: a field is
    added there and filled in :func:`_task`); the other attributes are the projector's own.
    """

    owner: str
    live: bool
    visible: dict[str, Any]
    # Milliseconds since the epoch of the last sign of life; None when the document has none.
    last_activity_ms: int | None = None
    succeeded: bool = False  # finished with a status of Rules.succeeded


@dataclass(frozen=True)
class Balance:
    """A user's balance: exact USD credit, derived points, experience."""

    owner: str
    usd_credit: str
    points: int
    exp: int


# Every document field the normalizer (and projector.progress) reads. The change stream asks the
# server for these alone: a generation's prompt, outputs and other metadata never cross the wire.
TASK_DOCUMENT_FIELDS = (
    "_id", "masterAccountId", "status", "costUsd", "toolId", "toolDisplayName", "notificationPlatform",
    "sourcePlatform", "requestTimestamp", "updatedAt", "responseTimestamp",
    "progressPercent", "progress", "currentStep", "totalSteps", "step", "steps", "current", "total",
    "metadata.toolDisplayName", "metadata.progressPercent", "metadata.progress", "metadata.currentStep",
    "metadata.totalSteps", "metadata.step", "metadata.steps", "metadata.current", "metadata.total",
)
BALANCE_DOCUMENT_FIELDS = ("_id", "masterAccountId", "usdCredit", "balanceUsd", "exp")


# ---------------------------------------------------------------------------- documents


def _unreadable(name: str, exc: Exception) -> FieldError:
    """What reading field ``name`` raised, as a :class:`FieldError` naming it (one field of one
    document: never a crash, a reason). Each read below is its own ``try``: free in CPython 3.11
    when nothing is raised, where a wrapper call per field cost ~2 µs a task."""
    if isinstance(exc, FieldError):
        return exc
    return FieldError(name, f"cannot be read ({type(exc).__name__}: {str(exc)[:80]})")


def _project(build: Callable[[Mapping[str, Any], Rules], Any], doc: Any, rules: Rules) -> Any:
    if not is_mapping(doc):
        return Invalid(f"document is a {type(doc).__name__}, not a mapping")
    try:
        return build(doc, rules)
    except FieldError as exc:
        return Invalid(str(exc))


def normalize_task(doc: Any, rules: Rules = Rules()) -> Task | Invalid:
    """A ``generationOutputs`` document as a :class:`Task`, or why it cannot be one. Never raises."""
    return _project(_task, doc, rules)


def _task(doc: Mapping[str, Any], rules: Rules) -> Task | Invalid:
    raw = doc.get("_id")
    try:
        generation_id = document_id(raw)
    except Exception as exc:
        raise _unreadable("_id", exc) from None
    if generation_id is None:
        return Invalid("missing or unusable _id")
    raw = doc.get("masterAccountId")
    try:
        owner = account_id(raw)
    except Exception as exc:
        raise _unreadable("masterAccountId", exc) from None
    if owner is None:
        return Invalid(f"missing or invalid masterAccountId: {describe(raw)}")
    raw = doc.get("status")
    try:
        status = normalize_status(raw)
    except Exception as exc:
        raise _unreadable("status", exc) from None
    if status is None:
        return Invalid(f"missing or non-text status: {describe(raw)}")
    raw = doc.get("costUsd")
    try:
        cost = None if raw is None else money_text("costUsd", raw)
    except Exception as exc:
        raise _unreadable("costUsd", exc) from None

    live = not rules.is_terminal(status)
    try:
        percent = read_progress(doc)
    except Exception as exc:
        raise _unreadable("progress", exc) from None
    source = "reported" if percent is not None else None
    if percent is None:
        if status in rules.queued:
            percent, source = 0.0, "status"
        elif not live:
            percent, source = 100.0, "status"

    raw_metadata = doc.get("metadata")
    metadata: Mapping[str, Any] = raw_metadata if is_mapping(raw_metadata) else {}
    started = _moment(doc, "requestTimestamp")
    updated = _moment(doc, "updatedAt") or _moment(doc, "responseTimestamp") or started
    return Task(
        owner=owner,
        live=live,
        visible={  # in the order of readmodel.records.TASK_FIELDS
            "generationId": generation_id,
            "idHash": id_hash(generation_id),
            "status": status,
            "progressPercent": percent,
            "progressSource": source,
            "toolId": clip_text(doc.get("toolId"), MAX_TOOL_ID),
            "toolDisplayName": (clip_text(doc.get("toolDisplayName"), MAX_DISPLAY_NAME)
                                or clip_text(metadata.get("toolDisplayName"), MAX_DISPLAY_NAME)),
            "costUsd": cost,
            "startedAt": started[0] if started else None,
            "updatedAt": updated[0] if updated else None,
            "sourcePlatform": (clip_text(doc.get("notificationPlatform"), MAX_PLATFORM)
                               or clip_text(doc.get("sourcePlatform"), MAX_PLATFORM)),
        },
        last_activity_ms=updated[1] if updated else None,
        succeeded=not live and status in rules.succeeded,
    )


def _moment(doc: Mapping[str, Any], name: str) -> Moment | None:
    raw = doc.get(name)
    try:
        return moment(raw)
    except Exception as exc:
        raise _unreadable(name, exc) from None


def normalize_balance(doc: Any, rules: Rules = Rules()) -> Balance | Invalid:
    """A ``userEconomy`` document as a :class:`Balance`, or why it cannot be one. Never raises."""
    return _project(_balance, doc, rules)


def _balance(doc: Mapping[str, Any], rules: Rules) -> Balance | Invalid:
    raw = doc.get("masterAccountId")
    try:
        owner = account_id(raw)
    except Exception as exc:
        raise _unreadable("masterAccountId", exc) from None
    if owner is None:
        return Invalid(f"missing or invalid masterAccountId: {describe(raw)}")
    name = "usdCredit" if "usdCredit" in doc else "balanceUsd"
    raw = doc.get(name)
    try:
        credit = Decimal(0) if raw is None else money(name, raw)
    except Exception as exc:
        raise _unreadable(name, exc) from None
    raw = doc.get("exp")
    try:
        exp = 0 if raw is None else counter("exp", raw)
    except Exception as exc:
        raise _unreadable("exp", exc) from None
    try:
        points = points_for(credit, rules.points_rate)
    except Exception as exc:
        raise _unreadable("points", exc) from None
    return Balance(owner=owner, usd_credit=decimal_text(credit), points=points, exp=exp)


def is_stale(task: Task, now_ms: int, rules: Rules) -> bool:
    """A live task with no sign of life for longer than the configured age."""
    return task.last_activity_ms is not None and now_ms - task.last_activity_ms > rules.stale_after_ms
