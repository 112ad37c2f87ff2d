"""Projector settings from the environment or flags, validated once at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Mapping

from .normalize import QUEUED_STATUSES, RUNNING_STATUSES, TERMINAL_STATUSES, Rules, normalize_status


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says which and why."""


def _statuses(env: Mapping[str, str], name: str, default: frozenset[str]) -> frozenset[str]:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    values = {normalize_status(part) for part in raw.split(",")}
    return frozenset(v for v in values if v)


def _positive_number(env: Mapping[str, str], name: str, default: str) -> Decimal:
    raw = env.get(name, default)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value.is_finite() or value <= 0:
        raise SettingsError(f"{name} must be a positive number, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the worker reads from its environment (see the README's configuration table)."""

    mongo_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    mongo_db: str = "app"
    tasks_collection: str = "generationOutputs"
    economy_collection: str = "userEconomy"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ls"
    rules: Rules = field(default_factory=Rules)
    batch_size: int = 1000
    metrics_port: int | None = None
    deadletter_max: int = 10_000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        env = os.environ if env is None else env
        terminal = _statuses(env, "TERMINAL_STATUSES", TERMINAL_STATUSES)
        queued = _statuses(env, "QUEUED_STATUSES", QUEUED_STATUSES) - terminal
        running = _statuses(env, "RUNNING_STATUSES", RUNNING_STATUSES) - terminal
        stale_hours = _positive_number(env, "STALE_AFTER_HOURS", "24")
        rules = Rules(
            queued=queued,
            running=running,
            terminal=terminal,
            points_rate=_positive_number(env, "POINTS_RATE", "0.00037"),
            stale_after_ms=int(stale_hours * 3600 * 1000),
        )
        metrics_port = env.get("METRICS_PORT")
        values: dict[str, object] = dict(
            mongo_url=env.get("MONGO_URL", cls.mongo_url),
            mongo_db=env.get("MONGO_DB", cls.mongo_db),
            tasks_collection=env.get("TASKS_COLLECTION", cls.tasks_collection),
            economy_collection=env.get("ECONOMY_COLLECTION", cls.economy_collection),
            redis_url=env.get("REDIS_URL", cls.redis_url),
            key_prefix=env.get("KEY_PREFIX", cls.key_prefix),
            rules=rules,
            batch_size=int(_positive_number(env, "BATCH_SIZE", "1000")),
            deadletter_max=int(_positive_number(env, "DEADLETTER_MAX", "10000")),
            metrics_port=int(metrics_port) if metrics_port and metrics_port.isdigit() else None,
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        if metrics_port and settings.metrics_port is None:
            raise SettingsError(f"METRICS_PORT must be a port number, got {metrics_port!r}")
        return settings
