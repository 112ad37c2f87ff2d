"""Projector settings from the environment or flags, validated once at start-up.

What the API shares with the projector is one block, ``store`` (a
:class:`readmodel.settings.StoreSettings`: Redis URL, cluster or not, key prefix), parsed by
``store_settings`` and kept whole; the number parsing is :mod:`readmodel.settings` too. This adds
what only the projector reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from pymongo.errors import PyMongoError
from pymongo.uri_parser import parse_uri

from readmodel import Layout, Partition
from readmodel.settings import SettingsError, StoreSettings, store_settings, whole, with_secret_files

from .normalize import QUEUED_STATUSES, RUNNING_STATUSES, SUCCESS_STATUSES, TERMINAL_STATUSES, Rules
from .values import normalize_status

__all__ = ["Settings", "SettingsError"]


def _statuses(env: Mapping[str, str], name: str, default: frozenset[str]) -> frozenset[str]:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    values = {normalize_status(part) for part in raw.split(",")}
    return frozenset(v for v in values if v)


def _positive_decimal(env: Mapping[str, str], name: str, default: str) -> Decimal:
    raw = env.get(name) or default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value.is_finite() or value <= 0 or value.adjusted() > 6:
        raise SettingsError(f"{name} must be a positive number below a million, got {raw!r}")
    return value


def _partition(raw: str) -> Partition:
    try:
        return Partition.parse(raw)
    except ValueError as exc:
        raise SettingsError(f"PARTITION: {exc}") from None


def _mongo_url(raw: str) -> str:
    """A MongoDB connection string pymongo can parse (a mongodb+srv:// one is resolved at connect
    time); the error names what is wrong, never the URL (it may carry a password)."""
    url = raw.strip()
    if url.startswith("mongodb+srv://"):
        return url
    try:
        parse_uri(url, warn=True)
    except (ValueError, PyMongoError) as exc:
        raise SettingsError(f"MONGO_URL is not a usable MongoDB URL: {str(exc).rstrip('.')}") from None
    return url


def _collection(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip()
    if not value or "$" in value or "\0" in value:
        raise SettingsError(f"{name} must be a collection name, got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the worker reads from its environment (see the README's configuration table)."""

    mongo_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    mongo_db: str = "app"
    tasks_collection: str = "generationOutputs"
    economy_collection: str = "userEconomy"
    store: StoreSettings = field(default_factory=StoreSettings)  # Redis and the key prefix: the API's too
    rules: Rules = field(default_factory=Rules)
    batch_size: int = 1000
    metrics_port: int | None = None
    deadletter_max: int = 10_000
    partition: Partition = Partition()  # K/N: this process owns 1/N of the documents (PARTITION)
    fence_audit: bool = False  # tests only (FENCE_AUDIT=1): fenced writes are recorded (readmodel.fences)

    @property
    def layout(self) -> Layout:
        """The read model's keys, with this partition's own projector keys."""
        return Layout(self.store.key_prefix, self.partition)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = with_secret_files(os.environ if env is None else env)
        store = store_settings({**env, **{name.upper(): str(overrides.pop(name)) for name in ("redis_url", "key_prefix")
                                          if overrides.get(name) is not None}})
        terminal = _statuses(env, "TERMINAL_STATUSES", TERMINAL_STATUSES)
        queued = _statuses(env, "QUEUED_STATUSES", QUEUED_STATUSES) - terminal
        running = _statuses(env, "RUNNING_STATUSES", RUNNING_STATUSES) - terminal
        succeeded = _statuses(env, "SUCCESS_STATUSES", SUCCESS_STATUSES & terminal)
        if not succeeded <= terminal:
            raise SettingsError(f"SUCCESS_STATUSES must be terminal statuses too; not in TERMINAL_STATUSES: "
                                f"{', '.join(sorted(succeeded - terminal))}")
        stale_hours = _positive_decimal(env, "STALE_AFTER_HOURS", "24")
        rules = Rules(
            queued=queued,
            running=running,
            terminal=terminal,
            succeeded=succeeded,
            points_rate=_positive_decimal(env, "POINTS_RATE", "0.00037"),
            stale_after_ms=int(stale_hours * 3600 * 1000),
        )
        values: dict[str, object] = dict(
            partition=_partition(str(overrides.pop("partition", None) or env.get("PARTITION") or "0/1")),
            mongo_url=_mongo_url(env.get("MONGO_URL", cls.mongo_url)),
            mongo_db=_collection(env, "MONGO_DB", cls.mongo_db),
            tasks_collection=_collection(env, "TASKS_COLLECTION", cls.tasks_collection),
            economy_collection=_collection(env, "ECONOMY_COLLECTION", cls.economy_collection),
            store=store,
            rules=rules,
            batch_size=whole(env, "BATCH_SIZE", cls.batch_size, 1),
            deadletter_max=whole(env, "DEADLETTER_MAX", cls.deadletter_max, 1),
            metrics_port=None if not env.get("METRICS_PORT") else whole(env, "METRICS_PORT", 0, 1),
            fence_audit=env.get("FENCE_AUDIT", "") == "1",
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.metrics_port is not None and settings.metrics_port > 65535:
            raise SettingsError(f"METRICS_PORT must be a port number, got {settings.metrics_port}")
        return settings
