"""API settings from the environment, validated once when the app is built (never at import).

What the API shares with the projector is one block, ``store`` (a
:class:`readmodel.settings.StoreSettings`: Redis URL, cluster or not, key prefix), parsed by
``store_settings`` and kept whole; the number parsing is :mod:`readmodel.settings` too. This adds
what only the API reads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from readmodel import Layout, Partition
from readmodel.records import ESTIMATE_CAP_PERCENT, LIVE_TASKS_SHOWN
from readmodel.settings import SettingsError, StoreSettings, flag, number, store_settings, whole, with_secret_files

MIN_SECRET_BYTES = 32  # HS256 wants a key at least as long as its hash
MIN_KEY_CHARS = 32  # a service key must not be guessable

__all__ = ["InsecureConfig", "Settings", "SettingsError"]


class InsecureConfig(SettingsError):
    """No service keys or no token secret, and the insecure dev mode was not asked for."""


def _csv(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def _partitions(env: Mapping[str, str]) -> int:
    count = whole(env, "PROJECTOR_PARTITIONS", 1, 1)
    try:
        Partition(0, count)  # the bound lives with the partitions
    except ValueError as exc:
        raise SettingsError(f"PROJECTOR_PARTITIONS: {exc}") from None
    return count


@dataclass(frozen=True)
class Settings:
    """Everything the API reads from its environment (see the README's configuration table)."""

    store: StoreSettings = field(default_factory=StoreSettings)  # Redis and the key prefix: the projector's too
    redis_max_connections: int = 64  # per process; requests beyond it wait for a free connection
    api_keys: tuple[str, ...] = ()
    auth_secret: str | None = None
    insecure_dev: bool = False
    cors_origins: tuple[str, ...] = ()
    heartbeat_s: float = 15.0  # SSE comment lines that keep proxies from closing idle streams
    retry_ms: int = 2000  # the EventSource reconnect delay the server asks for
    send_timeout_s: float = 60.0  # a client that accepts nothing for this long is dropped
    shutdown_grace_s: float = 1.0  # streams get this long to say goodbye on SIGTERM
    ready_max_heartbeat_age_s: float = 10.0  # /readyz: the projector's heartbeat must be this fresh
    projector_partitions: int = 1  # /readyz: the projector runs as this many partitions (PARTITION=K/N)
    estimate_cap_percent: float = ESTIMATE_CAP_PERCENT  # an estimated bar never claims to be done
    live_tasks_shown: int = LIVE_TASKS_SHOWN  # a snapshot lists this many live tasks, then a count
    text_task_limit: int = 5  # /status/text lists this many tasks, then "…and N more"
    token_leeway_s: float = 30.0  # clock skew forgiven on a user token's exp and iat
    token_max_lifetime_s: float = 7 * 86400  # a user token valid for longer (exp - iat) is refused
    token_audience: str | None = None  # when set, user tokens must carry this `aud`
    token_issuer: str | None = None  # when set, user tokens must carry this `iss`
    streams_per_user: int = 20  # open streams of one user, whoever opened them
    streams_per_token: int = 10  # open streams of one user token
    streams_per_service_key: int = 1000  # open streams of one service key
    streams_per_process: int = 10000  # open streams of this process (about 16 KiB each)
    panel_frame_ancestors: str = "'none'"  # CSP frame-ancestors of /panel: who may embed it
    fresh_wait_s: float = 2.0  # afterClusterTime: wait this long for the projector, then 504 projection_behind
    long_poll_max_s: float = 30.0  # newerThan: the longest a long-poll waits (waitS is capped to it)
    text_stream_interval_s: float = 3.0  # /status/text/stream: at most one event per interval per stream
    stalled_factor: float = 3.0  # a live task not updated for this many typical durations is stalled
    stalled_after_s: float = 600.0  # ... or for this long when its tool's typical duration is unknown
    host: str = "127.0.0.1"
    port: int = 8000

    @property
    def projector_layouts(self) -> list[Layout]:
        """The key layout of each projector partition whose heartbeat /readyz checks."""
        count = self.projector_partitions
        return [Layout(self.store.key_prefix, Partition(index, count)) for index in range(count)]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = with_secret_files(os.environ if env is None else env)
        port_raw = env.get("API_PORT", str(cls.port))
        if not port_raw.isdigit() or not 0 < int(port_raw) < 65536:
            raise SettingsError(f"API_PORT must be a port number, got {port_raw!r}")
        values: dict[str, object] = dict(
            store=store_settings(env),
            redis_max_connections=whole(env, "REDIS_MAX_CONNECTIONS", cls.redis_max_connections, 1),
            api_keys=_csv(env.get("API_KEYS")),
            auth_secret=env.get("AUTH_SECRET") or None,
            insecure_dev=flag(env, "API_INSECURE_DEV", cls.insecure_dev),
            cors_origins=_csv(env.get("CORS_ORIGINS")),
            heartbeat_s=number(env, "SSE_HEARTBEAT_S", cls.heartbeat_s, 0.05),
            retry_ms=whole(env, "SSE_RETRY_MS", cls.retry_ms, 0),
            send_timeout_s=number(env, "SSE_SEND_TIMEOUT_S", cls.send_timeout_s, 0.1),
            shutdown_grace_s=number(env, "SSE_SHUTDOWN_GRACE_S", cls.shutdown_grace_s, 0),
            ready_max_heartbeat_age_s=number(env, "READY_MAX_HEARTBEAT_AGE_S", cls.ready_max_heartbeat_age_s, 0.1),
            projector_partitions=_partitions(env),
            estimate_cap_percent=number(env, "ESTIMATE_CAP_PERCENT", cls.estimate_cap_percent, 0),
            live_tasks_shown=whole(env, "LIVE_TASKS_SHOWN", cls.live_tasks_shown, 1),
            text_task_limit=whole(env, "TEXT_TASK_LIMIT", cls.text_task_limit, 1),
            token_leeway_s=number(env, "TOKEN_LEEWAY_S", cls.token_leeway_s, 0),
            token_max_lifetime_s=number(env, "TOKEN_MAX_LIFETIME_S", cls.token_max_lifetime_s, 1),
            token_audience=env.get("TOKEN_AUDIENCE") or None,
            token_issuer=env.get("TOKEN_ISSUER") or None,
            streams_per_user=whole(env, "STREAMS_PER_USER", cls.streams_per_user, 1),
            streams_per_token=whole(env, "STREAMS_PER_TOKEN", cls.streams_per_token, 1),
            streams_per_service_key=whole(env, "STREAMS_PER_SERVICE_KEY", cls.streams_per_service_key, 1),
            streams_per_process=whole(env, "STREAMS_PER_PROCESS", cls.streams_per_process, 1),
            panel_frame_ancestors=(env.get("PANEL_FRAME_ANCESTORS") or "").strip() or cls.panel_frame_ancestors,
            fresh_wait_s=number(env, "FRESH_WAIT_S", cls.fresh_wait_s, 0),
            long_poll_max_s=number(env, "LONG_POLL_MAX_S", cls.long_poll_max_s, 0.1),
            text_stream_interval_s=number(env, "TEXT_STREAM_INTERVAL_S", cls.text_stream_interval_s, 0.05),
            stalled_factor=number(env, "STALLED_FACTOR", cls.stalled_factor, 1),
            stalled_after_s=number(env, "STALLED_AFTER_S", cls.stalled_after_s, 1),
            host=env.get("API_HOST", cls.host),
            port=int(port_raw),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.auth_secret is not None and len(self.auth_secret.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(f"AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)")
        short = sum(len(key) < MIN_KEY_CHARS for key in self.api_keys)
        if short:
            raise SettingsError(
                f"API_KEYS: every service key must be at least {MIN_KEY_CHARS} characters (e.g. `openssl rand -hex 32`); "
                f"{short} of {len(self.api_keys)} {'is' if short == 1 else 'are'} shorter"
            )
        if any(char in self.panel_frame_ancestors for char in ";,\r\n"):
            raise SettingsError("PANEL_FRAME_ANCESTORS must be CSP sources separated by spaces (e.g. https://app.example)")
        if self.estimate_cap_percent > 100:
            raise SettingsError("ESTIMATE_CAP_PERCENT must be at most 100")
        if self.long_poll_max_s > 30:
            raise SettingsError("LONG_POLL_MAX_S must be at most 30 (seconds)")

    def check_secure(self) -> None:
        """Refuse to serve without both kinds of credentials unless insecure dev mode is on."""
        if self.insecure_dev:
            if self.api_keys or self.auth_secret:
                raise InsecureConfig(
                    "refusing to start: --insecure-dev (API_INSECURE_DEV=1) would serve every user without authentication "
                    "although API_KEYS or AUTH_SECRET is set; unset them for a dev machine, or drop --insecure-dev."
                )
            return
        missing = [name for name, value in (("API_KEYS", self.api_keys), ("AUTH_SECRET", self.auth_secret)) if not value]
        if missing:
            raise InsecureConfig(
                f"refusing to start: {' and '.join(missing)} not set. Set them, or pass --insecure-dev "
                "(API_INSECURE_DEV=1) to serve every user's status without authentication on a dev machine."
            )
