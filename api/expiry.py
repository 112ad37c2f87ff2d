"""Streams opened with a user token end when the token does.

A token is checked when its stream opens; without this, a stream opened with a one-hour token
would stay open for days. When the token stops being accepted (``exp`` plus the leeway), the
stream gets a last event saying why, ``event: end`` with ``{"reason": "token_expired", ...}``,
and ends; the client can then come back with a fresh token. Service-key streams have no end.
"""

from __future__ import annotations

import asyncio
import time

from sse_starlette import JSONServerSentEvent

from .mailbox import Mailbox

TOKEN_EXPIRED_FRAME = JSONServerSentEvent(
    {"reason": "token_expired", "message": "the token has expired; reconnect with a fresh one"}, event="end"
).encode()


def end_at_expiry(mailbox: Mailbox, expires_at: float | None, leeway_s: float) -> asyncio.TimerHandle | None:
    """Schedule ``mailbox``'s end with :data:`TOKEN_EXPIRED_FRAME` when the token stops being accepted."""
    if expires_at is None:
        return None
    delay = max(0.0, expires_at + leeway_s - time.time())
    return asyncio.get_running_loop().call_later(delay, mailbox.finish, TOKEN_EXPIRED_FRAME)
