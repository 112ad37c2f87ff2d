"""Who is asking: service keys (bots, any user) and signed per-user tokens (the web panel, one user).

A service key is sent as ``Authorization: Bearer <key>`` and compared in constant time. A user
token is a standard HS256 JWT signed with ``AUTH_SECRET`` whose ``sub`` is the masterAccountId; it
may come as a Bearer header, a ``token`` query parameter (EventSource cannot set headers) or a
cookie.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

import jwt

from .errors import Forbidden, InvalidCredentials, MissingCredentials, TokenExpired
from .settings import Settings

ALGORITHM = "HS256"
DEFAULT_TTL_S = 3600


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a service (reads anyone) or a user (reads only ``subject``)."""

    kind: str  # "service" | "user" | "dev"
    subject: str | None = None

    def may_read(self, uid: str) -> bool:
        return self.kind in ("service", "dev") or self.subject == uid


def mint_token(secret: str, uid: str, ttl_s: int = DEFAULT_TTL_S, now: float | None = None) -> str:
    """A user token for ``uid`` that expires ``ttl_s`` seconds from ``now``."""
    issued = int(time.time() if now is None else now)
    return jwt.encode({"sub": uid, "iat": issued, "exp": issued + int(ttl_s)}, secret, algorithm=ALGORITHM)


def _is_service_key(candidate: str, keys: tuple[str, ...]) -> bool:
    # Compare against every key (no early exit), each in constant time.
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate.encode(), key.encode())
    return found


def _decode_user_token(token: str, secret: str | None) -> Principal:
    if not secret:
        raise InvalidCredentials("user tokens are not accepted: the server has no AUTH_SECRET")
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise TokenExpired("the token has expired; ask the bot for a fresh panel link") from None
    except jwt.InvalidTokenError:
        raise InvalidCredentials("the key or token is not valid") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidCredentials("the token names no user")
    return Principal("user", subject)


def authenticate(settings: Settings, bearer: str | None, query_token: str | None, cookie_token: str | None) -> Principal:
    """The caller behind the first credential found (header, then query, then cookie)."""
    if bearer:
        if settings.api_keys and _is_service_key(bearer, settings.api_keys):
            return Principal("service")
        return _decode_user_token(bearer, settings.auth_secret)
    token = query_token or cookie_token
    if token:
        return _decode_user_token(token, settings.auth_secret)
    if settings.insecure_dev:
        return Principal("dev")
    raise MissingCredentials("send `Authorization: Bearer <service key or user token>` or a `token` parameter")


def authorize(principal: Principal, uid: str) -> None:
    """Raise :class:`Forbidden` unless ``principal`` may read ``uid``."""
    if not principal.may_read(uid):
        raise Forbidden("this token may only read its own user's status")
