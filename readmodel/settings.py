"""The settings the projector and the API share, parsed by one function so they always agree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .keys import PREFIX_RE


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says which and why."""


# Settings that carry credentials, and so may come from a file: NAME_FILE=/run/secrets/name.
SECRET_SETTINGS = ("API_KEYS", "AUTH_SECRET", "REDIS_URL", "MONGO_URL")


def with_secret_files(env: Mapping[str, str]) -> Mapping[str, str]:
    """``env`` with each ``NAME_FILE`` of :data:`SECRET_SETTINGS` read into ``NAME`` (secrets
    mounted as files by compose or Kubernetes instead of passed in the environment). The file's
    trailing newline is dropped. Setting both ``NAME`` and ``NAME_FILE``, or naming a file that
    cannot be read, is an error; the message never carries the file's content."""
    named = [name for name in SECRET_SETTINGS if env.get(f"{name}_FILE")]
    if not named:
        return env
    resolved = dict(env)
    for name in named:
        path = env[f"{name}_FILE"]
        if env.get(name):
            raise SettingsError(f"{name} and {name}_FILE are both set; set one of them")
        try:
            resolved[name] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            raise SettingsError(f"{name}_FILE: cannot read {path} ({reason})") from None
    return resolved


@dataclass(frozen=True)
class StoreSettings:
    """Where the read model lives: the Redis URL, whether it names a node of a Redis Cluster,
    and the key prefix every key starts with."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "ls"
    cluster: bool = False


def store_settings(env: Mapping[str, str]) -> StoreSettings:
    """``REDIS_URL``, ``REDIS_CLUSTER`` and ``KEY_PREFIX`` from ``env``; unset means the default,
    set but empty or malformed is an error (an empty prefix would make the two processes disagree
    on every key). With ``REDIS_CLUSTER=1`` the URL names any node of the cluster."""
    url = env.get("REDIS_URL", StoreSettings.redis_url).strip()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(f"REDIS_URL must be a redis://, rediss:// or unix:// URL, got {url[:40]!r}")
    prefix = env.get("KEY_PREFIX", StoreSettings.key_prefix)
    if not PREFIX_RE.match(prefix):
        raise SettingsError(f"KEY_PREFIX must be 1-32 letters, digits or any of _ . : - (got {prefix!r})")
    cluster = flag(env, "REDIS_CLUSTER", StoreSettings.cluster)
    if cluster:
        if url.startswith("unix://"):
            raise SettingsError("REDIS_CLUSTER=1 needs a redis:// or rediss:// URL naming a cluster node, not a unix socket")
        database = urlsplit(url).path.strip("/")
        if database not in ("", "0"):
            raise SettingsError(f"a Redis Cluster has database 0 only; REDIS_URL names database {database!r}")
    return StoreSettings(redis_url=url, key_prefix=prefix, cluster=cluster)


def flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A yes/no setting: 1/true/yes/on or 0/false/no/off (any case); unset or blank means ``default``."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


def number(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    """A finite number >= ``minimum`` from ``env[name]``; unset or blank means ``default``."""
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum or value == float("inf"):
        raise SettingsError(f"{name} must be a finite number >= {minimum:g}, got {raw!r}")
    return value


def whole(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    """A whole number >= ``minimum`` from ``env[name]``; unset or blank means ``default``."""
    value = number(env, name, default, minimum)
    if value != int(value):
        raise SettingsError(f"{name} must be a whole number, got {env.get(name)!r}")
    return int(value)
