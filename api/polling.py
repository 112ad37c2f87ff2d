"""What a REST read may ask before it is answered: fresh after a write, changed since a version,
or changed since an ETag.

- ``afterClusterTime`` (fresh after my write): wait until the projector has applied the source
  through that cluster time (:mod:`.freshness`), at most ``FRESH_WAIT_S``; past it 504
  ``projection_behind``.
- ``newerThan`` (long-poll): answer once the user's version passes it, or after ``waitS``
  (at most ``LONG_POLL_MAX_S`` ≤ 30 s) with 304. A waiting poll holds a stream slot (the same
  per-user, per-credential and per-process bounds as SSE streams) and is woken by the fan-out's
  read of the user's change notification (no polling loop).
- ``If-None-Match``: a 200 whose ETag matches becomes a 304 with no body.

The ETag is weak (``W/"..."``): it names the version, the view (which endpoint, text platform and
markup, the shown-task cap) and what the read moment derives without a new version (which tasks
are stalled, how many are live or recently finished). Estimated percentages and ``source`` are not
part of it: a 304 means "nothing the user would see as a new state".

Every object here lives for one request (its own task).
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request, Response

from .deps import StreamGate
from .errors import ErrorBody, InvalidRequest, ProjectionBehind
from .freshness import parse_cluster_time
from .openapi import RETRY_AFTER

POLL_ERRORS: dict[int | str, dict[str, Any]] = {
    304: {"description": "not modified: the ETag matches If-None-Match, or a long-poll (newerThan) timed out"},
    429: {"model": ErrorBody, "headers": RETRY_AFTER,
          "description": "too_many_streams: a long-poll past the user's or credential's stream limit"},
    504: {"model": ErrorBody, "headers": RETRY_AFTER,
          "description": "projection_behind: not applied through afterClusterTime within FRESH_WAIT_S"},
}


def etag(snapshot: dict[str, Any], view: str) -> str:
    """The weak ETag of ``snapshot`` as served in ``view``."""
    live = snapshot.get("liveTasks") or []
    derived = "|".join(t["generationId"] for t in live if t.get("stalled"))
    derived += f"|{len(live)}|{snapshot.get('liveTasksOmitted', 0)}|{len(snapshot.get('recentlyFinished') or [])}"
    return f'W/"{snapshot["version"]}-{view}-{zlib.crc32(derived.encode()):08x}"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """Whether ``If-None-Match`` names ``tag`` (weak comparison, as RFC 9110 asks for it), or is ``*``."""
    if not if_none_match:
        return False
    bare = tag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == bare:
            return True
    return False


def not_modified(tag: str) -> Response:
    return Response(status_code=304, headers={"ETag": tag})


@dataclass
class ReadConditions:
    """One request's conditions; :meth:`snapshot` reads the snapshot once they are met.

    The app's parts come from its state, not from more dependencies: FastAPI walks a dependency's
    whole tree (parameters, security schemes) for every mention, cached or not; measured, five more
    made a snapshot GET run half again as many Python calls.
    """

    request: Request
    after: str | None
    newer_than: int | None
    wait_s: float
    if_none_match: str | None

    @property
    def settings(self) -> Any:
        return self.request.app.state.settings

    async def snapshot(self, uid: str) -> dict[str, Any]:
        """``uid``'s snapshot once fresh enough (504 past FRESH_WAIT_S) and, for a long-poll, newer
        than ``newerThan`` if that came within ``waitS`` (the caller answers 304 otherwise)."""
        state = self.request.app.state
        positions = state.positions
        if self.after is not None and not await positions.wait_through(self.after, self.settings.fresh_wait_s):
            through = positions.applied_through()
            lag = positions.source()["lagMs"]
            raise ProjectionBehind(
                f"the projection has applied the source through {through or 'nothing yet'}, not yet through "
                f"{self.after} (waited {self.settings.fresh_wait_s:g} s; lag {lag} ms); retry shortly",
                headers={"Retry-After": "1"},
            )
        read = state.reader.read
        if self.newer_than is None:
            return await read(uid)
        gate = StreamGate(uid, self.request.state.principal, state.limiter, self.settings.token_leeway_s)
        listener = gate.listen(state.fanout)  # before the read: a change right after it is not missed
        try:
            with state.metrics.waiting_polls.track_inprogress():
                snap = await read(uid)
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self.wait_s
                while snap["version"] <= self.newer_than and not listener.closed:
                    left = deadline - loop.time()
                    if left <= 0 or not await listener.wait(left):
                        break
                    offered = listener.take()
                    if offered is not None:
                        snap = offered.data
                return snap
        finally:
            listener.close()

    def answer(self, snapshot: dict[str, Any], view: str, response: Response) -> Response | None:
        """A 304 when the long-poll saw nothing newer or the ETag matches; else None after setting
        the ETag on the 200 ``response``."""
        tag = etag(snapshot, view)
        if (self.newer_than is not None and snapshot["version"] <= self.newer_than) or matches(self.if_none_match, tag):
            return not_modified(tag)
        response.headers["ETag"] = tag
        return None


async def _conditions(
    request: Request,
    afterClusterTime: Annotated[str | None, Query(
        max_length=40, description="fresh after my write: the cluster time of your write (your MongoDB session's "
        "operationTime as seconds.increment, or a position); answered once the projection reflects it")] = None,
    newerThan: Annotated[int | None, Query(
        ge=0, le=2**63 - 1, description="long-poll: answer once the version is above this one, or 304 after waitS")] = None,
    waitS: Annotated[float | None, Query(
        gt=0, le=30, description="long-poll: how long to wait at most (default and cap: LONG_POLL_MAX_S, ≤ 30)")] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=1024)] = None,
) -> ReadConditions:
    if waitS is not None and newerThan is None:
        raise InvalidRequest("waitS is for a long-poll: give newerThan (the version you have) too")
    cap = request.app.state.settings.long_poll_max_s
    return ReadConditions(
        request=request,
        after=None if afterClusterTime is None else parse_cluster_time(afterClusterTime),
        newer_than=newerThan,
        wait_s=min(waitS or cap, cap),
        if_none_match=if_none_match,
    )


ConditionsDep = Annotated[ReadConditions, Depends(_conditions)]
