"""Who is asking: service keys (bots, any user) and signed per-user tokens (the web panel, one user).

A service key is sent as ``Authorization: Bearer <key>`` and compared in constant time. A user
token is a standard HS256 JWT signed with ``AUTH_SECRET`` whose ``sub`` is the masterAccountId; it
may come as a Bearer header, a ``token`` query parameter (EventSource cannot set headers) or a
cookie. Its ``exp`` and ``iat`` are checked with a leeway for clock skew (``TOKEN_LEEWAY_S``), its
lifetime is capped (``TOKEN_MAX_LIFETIME_S``), and ``aud``/``iss`` are required when configured.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import jwt

from .errors import Forbidden, InvalidCredentials, MissingCredentials, TokenExpired, TokenNotYetValid
from .settings import Settings

ALGORITHM = "HS256"
DEFAULT_TTL_S = 3600


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a service (reads anyone) or a user (reads only ``subject``)."""

    kind: str  # "service" | "user" | "dev"
    subject: str | None = None
    credential: str = ""  # which key or token (a digest, never the credential): stream limits count by it
    expires_at: float | None = None  # a user token's exp (epoch seconds)

    def may_read(self, uid: str) -> bool:
        return self.kind in ("service", "dev") or self.subject == uid


def mint_token(
    secret: str,
    uid: str,
    ttl_s: int = DEFAULT_TTL_S,
    now: float | None = None,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """A user token for ``uid`` that expires ``ttl_s`` seconds from ``now`` (with ``aud``/``iss`` if given)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"sub": uid, "iat": issued, "exp": issued + int(ttl_s)}
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _digest(credential: str) -> str:
    return hashlib.blake2b(credential.encode(), digest_size=12).hexdigest()


def _service_key_index(candidate: str, keys: tuple[str, ...]) -> int | None:
    # Compare against every key (no early exit), each in constant time.
    found = None
    for index, key in enumerate(keys):
        if hmac.compare_digest(candidate.encode(), key.encode()):
            found = index
    return found


def _decode_user_token(token: str, settings: Settings) -> Principal:
    if not settings.auth_secret:
        raise InvalidCredentials("user tokens are not accepted: the server has no AUTH_SECRET")
    try:
        claims = jwt.decode(
            token,
            settings.auth_secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"]},
            leeway=settings.token_leeway_s,
            audience=settings.token_audience,
            issuer=settings.token_issuer,
        )
    except jwt.ExpiredSignatureError:
        raise TokenExpired("the token has expired; ask the bot for a fresh panel link") from None
    except jwt.ImmatureSignatureError:
        raise TokenNotYetValid(
            "the token is not valid yet by this server's clock (the clocks disagree); retry in a few seconds"
        ) from None
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError, jwt.MissingRequiredClaimError) as exc:
        raise InvalidCredentials(f"the token is not valid here: {_claim_problem(exc)}") from None
    except jwt.InvalidTokenError:
        raise InvalidCredentials("the key or token is not valid") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidCredentials("the token names no user")
    expires_at = float(claims["exp"])
    issued_at = claims.get("iat")
    start = float(issued_at) if isinstance(issued_at, (int, float)) else time.time()
    if expires_at - start > settings.token_max_lifetime_s:
        raise InvalidCredentials(
            f"the token is valid for longer than this server accepts ({settings.token_max_lifetime_s:g} s)"
        )
    return Principal("user", subject, credential="token:" + _digest(token), expires_at=expires_at)


def _claim_problem(exc: jwt.InvalidTokenError) -> str:
    if isinstance(exc, jwt.InvalidAudienceError):
        return "it was issued for another audience (aud)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "it comes from another issuer (iss)"
    return "it lacks a required claim"


def authenticate(settings: Settings, bearer: str | None, query_token: str | None, cookie_token: str | None) -> Principal:
    """The caller behind the first credential found (header, then query, then cookie)."""
    if bearer:
        index = _service_key_index(bearer, settings.api_keys) if settings.api_keys else None
        if index is not None:
            return Principal("service", credential=f"key:{index}")
        return _decode_user_token(bearer, settings)
    token = query_token or cookie_token
    if token:
        return _decode_user_token(token, settings)
    if settings.insecure_dev:
        return Principal("dev", credential="dev")
    raise MissingCredentials("send `Authorization: Bearer <service key or user token>` or a `token` parameter")


def authorize(principal: Principal, uid: str) -> None:
    """Raise :class:`Forbidden` unless ``principal`` may read ``uid``."""
    if not principal.may_read(uid):
        raise Forbidden("this token may only read its own user's status")
