"""What routes depend on, as ``Annotated`` aliases: settings, clients, the caller, the user id.

Every dependency is ``async def``: none of them blocks, and FastAPI runs a plain ``def``
dependency in the thread pool (a thread hop each, about five per request).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, Path, Query, Request
from fastapi.security import APIKeyCookie, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from readmodel import Layout
from readmodel.keys import USER_ID_PATTERN

from .auth import Principal, authenticate, authorize
from .expiry import end_at_expiry
from .fanout import Fanout
from .freshness import Positions
from .limits import StreamLimiter
from .mailbox import Mailbox
from .metrics import Metrics
from .settings import Settings
from .snapshots import SharedSnapshot, SnapshotReader

TOKEN_COOKIE = "livestatus_token"


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _redis(request: Request) -> Any:
    return request.app.state.redis


async def _layout(request: Request) -> Layout:
    return request.app.state.layout


async def _reader(request: Request) -> SnapshotReader:
    return request.app.state.reader


async def _positions(request: Request) -> Positions:
    return request.app.state.positions


async def _fanout(request: Request) -> Fanout:
    return request.app.state.fanout


async def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
RedisDep = Annotated[Any, Depends(_redis)]
LayoutDep = Annotated[Layout, Depends(_layout)]
ReaderDep = Annotated[SnapshotReader, Depends(_reader)]
PositionsDep = Annotated[Positions, Depends(_positions)]
FanoutDep = Annotated[Fanout, Depends(_fanout)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]

# The query parameters of both status-text routes (REST and stream): the chat platform, its parse mode.
PlatformQuery = Annotated[Literal["telegram", "discord"], Query(description="where the text will be sent")]
MarkupQuery = Annotated[Literal["html", "markdownv2"] | None, Query(description="Telegram only: parse mode (default html)")]

_bearer = HTTPBearer(auto_error=False, description="A service key (any user) or a user token (that user).")
_query_token = APIKeyQuery(name="token", auto_error=False, description="A user token, for clients that cannot set headers.")
_cookie_token = APIKeyCookie(name=TOKEN_COOKIE, auto_error=False, description="A user token in a cookie.")


async def _principal(
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    query_token: Annotated[str | None, Depends(_query_token)],
    cookie_token: Annotated[str | None, Depends(_cookie_token)],
) -> Principal:
    return authenticate(settings, bearer.credentials if bearer else None, query_token, cookie_token)


PrincipalDep = Annotated[Principal, Depends(_principal)]

UserIdPath = Annotated[
    str,
    Path(
        pattern=USER_ID_PATTERN,
        max_length=128,
        description="masterAccountId: letters, digits and `:_.-`, at most 128 characters.",
        examples=["x402:0x1821ab"],
    ),
]


async def _readable_user(request: Request, masterAccountId: UserIdPath, principal: PrincipalDep) -> str:
    authorize(principal, masterAccountId)
    # For what the route does later with the caller (a long-poll's stream slot), without naming
    # PrincipalDep again: FastAPI walks a dependency's whole tree for every mention of it.
    request.state.principal = principal
    return masterAccountId


ReadableUser = Annotated[str, Depends(_readable_user)]


class StreamGate:
    """What a stream must pass before it opens: a slot within the limits; and its token's end."""

    __slots__ = ("leeway_s", "limiter", "principal", "uid")

    def __init__(self, uid: str, principal: Principal, limiter: StreamLimiter, leeway_s: float) -> None:
        self.uid, self.principal, self.limiter, self.leeway_s = uid, principal, limiter, leeway_s

    def listen(self, fanout: Fanout) -> Mailbox:
        """The stream's mailbox, holding a slot until it closes and ending when a user token does.

        Raises TooManyStreams (429) or ServerBusy (503) past a limit.
        """
        slot = self.limiter.acquire(self.uid, self.principal)
        timer = None

        def end() -> None:
            slot.release()
            if timer is not None:
                timer.cancel()

        mailbox = fanout.listen(self.uid, on_end=end)
        if not mailbox.closed:
            timer = end_at_expiry(mailbox, self.principal.expires_at, self.leeway_s)
        return mailbox

    async def open(self, fanout: Fanout) -> tuple[Mailbox, SharedSnapshot]:
        """:meth:`listen`, then the user's first snapshot: listening first, a change right after
        the read is not missed. The read is batched with every other read waiting (a burst of
        openings shares round trips); if it fails, the mailbox closes and its slot is freed."""
        mailbox = self.listen(fanout)
        try:
            return mailbox, await fanout.first_snapshot(self.uid)
        except BaseException:
            mailbox.close()
            raise


async def _stream_gate(request: Request, uid: ReadableUser, principal: PrincipalDep, settings: SettingsDep) -> StreamGate:
    return StreamGate(uid, principal, request.app.state.limiter, settings.token_leeway_s)


StreamGateDep = Annotated[StreamGate, Depends(_stream_gate)]
