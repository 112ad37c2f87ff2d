"""Bounds on open streams: per user, per credential and per process.

A stream holds a file descriptor and memory for hours, so no caller may open them without end:
over a user's or a credential's bound the request gets 429 (``too_many_streams``), over the
process's bound 503 (``server_busy``: another instance may have room), both with
``Retry-After``. A slot is taken when the stream's listener is made and given back when it
closes, whichever way the stream ends.
"""

from __future__ import annotations

from typing import Any

from .auth import Principal
from .errors import ErrorBody, ServerBusy, TooManyStreams
from .openapi import RETRY_AFTER

RETRY_AFTER_S = 10

LIMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorBody, "headers": RETRY_AFTER,
          "description": "too_many_streams: this user or credential holds as many open streams as it may"},
}


class StreamSlot:
    """One open stream's place in the counts; :meth:`release` gives it back (idempotent)."""

    __slots__ = ("_held", "_limiter", "credential", "uid")

    def __init__(self, limiter: StreamLimiter, uid: str, credential: str) -> None:
        self._limiter, self.uid, self.credential, self._held = limiter, uid, credential, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limiter._release(self)


def _drop(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


class StreamLimiter:
    """Counts open streams per user, per credential and in all; refuses one past a bound."""

    def __init__(self, per_user: int, per_token: int, per_service_key: int, per_process: int, metrics: Any = None) -> None:
        self.per_user, self.per_token, self.per_service_key, self.per_process = per_user, per_token, per_service_key, per_process
        self.metrics = metrics
        self.open = 0
        self.closed = 0  # streams released since start: what the heap freezer reads (api.gcpolicy)
        self._users: dict[str, int] = {}
        self._credentials: dict[str, int] = {}

    def acquire(self, uid: str, principal: Principal) -> StreamSlot:
        """A slot for a stream of ``uid`` opened by ``principal``; raises ServerBusy or TooManyStreams."""
        retry = {"Retry-After": str(RETRY_AFTER_S)}
        if self.open >= self.per_process:
            self._refused("process")
            raise ServerBusy(
                f"this server holds as many streams as it may ({self.per_process}); retry shortly", headers=retry
            )
        if self._users.get(uid, 0) >= self.per_user:
            self._refused("user")
            raise TooManyStreams(
                f"this user already has {self.per_user} open streams; close one first", headers=retry
            )
        # Every caller of the insecure dev mode shares one credential: count it like a key.
        keyed = principal.kind in ("service", "dev")
        per_credential = self.per_service_key if keyed else self.per_token
        credential = principal.credential
        if self._credentials.get(credential, 0) >= per_credential:
            self._refused("credential")
            raise TooManyStreams(
                f"this {'key' if keyed else 'token'} already has {per_credential} open streams; "
                "close one first",
                headers=retry,
            )
        self.open += 1
        self._users[uid] = self._users.get(uid, 0) + 1
        self._credentials[credential] = self._credentials.get(credential, 0) + 1
        return StreamSlot(self, uid, credential)

    def count(self, uid: str | None = None, credential: str | None = None) -> int:
        """Open streams of ``uid``, of ``credential``, or in all."""
        if uid is not None:
            return self._users.get(uid, 0)
        if credential is not None:
            return self._credentials.get(credential, 0)
        return self.open

    def entries(self) -> int:
        """Users and credentials counted now (each with an open stream): what the limiter holds."""
        return len(self._users) + len(self._credentials)

    def _release(self, slot: StreamSlot) -> None:
        self.open -= 1
        self.closed += 1
        _drop(self._users, slot.uid)
        _drop(self._credentials, slot.credential)

    def _refused(self, limit: str) -> None:
        if self.metrics is not None:
            self.metrics.streams_refused.labels(limit=limit).inc()
