"""REST endpoints: snapshots for bots, rendered status text, health, readiness, metrics, panel."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from readmodel import aread_heartbeat_ms
from readmodel.connect import StoreError

from . import panel as panel_page
from . import snapshots
from .deps import MarkupQuery, MetricsDep, PlatformQuery, ReadableUser, ReaderDep, RedisDep, SettingsDep
from .errors import ErrorBody, NotReady
from .models import Health, Ready, Snapshot, StatusReport, StatusText
from .openapi import RETRY_AFTER
from .polling import POLL_ERRORS, ConditionsDep
from .render import DISCORD_ALLOWED_MENTIONS, markup_for, render

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "malformed id or parameter"},
    401: {"model": ErrorBody, "description": "no, bad or expired credentials"},
    403: {"model": ErrorBody, "description": "a user token for another user"},
    503: {"model": ErrorBody, "headers": RETRY_AFTER,
          "description": "store_unavailable: Redis does not answer (streams also: server_busy, this process is full)"},
}

log = logging.getLogger("api")
users = APIRouter(tags=["status"], responses=ERRORS)
ops = APIRouter(tags=["operations"])


@users.get("/users/{masterAccountId}/status", response_model=Snapshot, responses=POLL_ERRORS, operation_id="getStatus")
async def status(uid: ReadableUser, when: ConditionsDep, response: Response) -> Any:
    """The user's current snapshot (version 0 and empty when nothing is known); conditional (ETag), fresh
    after a write (afterClusterTime) or long-polled (newerThan)."""
    snap = await when.snapshot(uid)
    return when.answer(snap, f"s{when.settings.live_tasks_shown}", response) or snap


def _number(text: str | None) -> float | None:
    return None if text is None else float(Decimal(text))


@users.get("/users/{masterAccountId}/status-report", response_model=StatusReport, responses=POLL_ERRORS,
           operation_id="getStatusReport")
async def status_report(uid: ReadableUser, when: ConditionsDep, response: Response) -> Any:
    """The legacy shape the bots consume today (walletAddress is always null: not ours)."""
    snap = await when.snapshot(uid)
    unchanged = when.answer(snap, f"r{when.settings.live_tasks_shown}", response)
    if unchanged is not None:
        return unchanged
    return {
        "points": snap["balance"]["points"],
        "exp": snap["balance"]["exp"],
        "walletAddress": None,
        "liveTasks": [
            {
                "idHash": t["idHash"],
                "status": t["status"],
                "costUsd": _number(t.get("costUsd")),
                "progress": t.get("progressPercent"),
                "sourcePlatform": t.get("sourcePlatform"),
                "updatedAt": t.get("updatedAt"),
                "startedAt": t.get("startedAt"),
                "toolId": t.get("toolId"),
            }
            for t in snap["liveTasks"]
        ],
    }


@users.get("/users/{masterAccountId}/status/text", response_model=StatusText, responses=POLL_ERRORS, operation_id="getStatusText")
async def status_text(
    uid: ReadableUser,
    reader: ReaderDep,
    settings: SettingsDep,
    when: ConditionsDep,
    response: Response,
    platform: PlatformQuery,
    markup: MarkupQuery = None,
) -> Any:
    """The status message rendered for a chat platform, escaped for its parse mode."""
    snap = await when.snapshot(uid)
    chosen = markup_for(platform, markup)
    unchanged = when.answer(snap, f"t{platform}.{chosen.parse_mode}.{settings.text_task_limit}.{settings.live_tasks_shown}",
                            response)
    if unchanged is not None:
        return unchanged
    return {
        "masterAccountId": uid,
        "version": snap["version"],
        "platform": platform,
        "parseMode": chosen.parse_mode,
        "allowedMentions": DISCORD_ALLOWED_MENTIONS if platform == "discord" else None,
        "text": render(snap, chosen, reader.clock(), settings.text_task_limit),
        "source": snap.get("source"),
    }


@ops.get("/healthz", response_model=Health, operation_id="getHealthz")
async def healthz() -> dict[str, str]:
    """The process is up (no dependencies checked)."""
    return {"status": "ok"}


@ops.get("/readyz", response_model=Ready, operation_id="getReadyz",
         responses={503: {"model": ErrorBody, "description": "not_ready: Redis or the projector is not healthy"}})
async def readyz(redis: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    """Redis answers and the projector's heartbeat (every partition's) is fresh."""
    ages = []
    try:
        full = await _redis_full(redis)
    except StoreError as exc:
        log.warning("/readyz: Redis failed: %s: %s", type(exc).__name__, exc)
        raise NotReady(_redis_problem(exc)) from None
    if full:
        raise NotReady("Redis is full (at its maxmemory, with maxmemory-policy noeviction): it refuses the "
                       "projector's writes, so snapshots fall behind; give it more memory")
    for own in settings.projector_layouts:
        name = f"projector partition {own.partition}" if own.partition.count > 1 else "the projector"
        try:
            heartbeat = await aread_heartbeat_ms(redis, own)
        except StoreError as exc:
            log.warning("/readyz: Redis failed: %s: %s", type(exc).__name__, exc)
            raise NotReady(_redis_problem(exc)) from None
        if heartbeat is None:
            raise NotReady(f"no heartbeat of {name} in Redis yet")
        age = snapshots.now_ms() - heartbeat
        if age > settings.ready_max_heartbeat_age_s * 1000:
            raise NotReady(f"the heartbeat of {name} is {age} ms old (limit {settings.ready_max_heartbeat_age_s:g} s)")
        ages.append(age)
    return {"status": "ready", "projectorHeartbeatAgeMs": max(ages)}


async def _redis_full(redis: Any) -> bool:
    """Whether a Redis (any master of a cluster) with ``noeviction`` is at its ``maxmemory`` (within
    5%: used memory hovers just below the limit while writes that would pass it are refused)."""
    info = await redis.info("memory")
    nodes = info.values() if info and all(isinstance(v, dict) for v in info.values()) else [info]
    return any(node.get("maxmemory_policy") == "noeviction" and 0 < int(node.get("maxmemory", 0))
               <= int(node.get("used_memory", 0)) / 0.95 for node in nodes)


def _redis_problem(exc: Exception) -> str:
    """What is wrong with Redis, in our words (its own text may name hosts; it goes to the log)."""
    if isinstance(exc, AuthenticationError):
        return "Redis refused this process's credentials (check REDIS_URL)"
    if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
        return "Redis does not answer (check that it runs and that REDIS_URL points at it)"
    if not isinstance(exc, RedisError):  # a cluster client's RedisClusterException
        return "the Redis Cluster does not serve every slot right now (a failover may be under way)"
    return "Redis answered the health read with an error (details in this process's log)"


@ops.get("/metrics", response_class=Response, operation_id="getMetrics", responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@ops.get("/panel", response_class=HTMLResponse, operation_id="getPanel", tags=["panel"])
async def panel(settings: SettingsDep) -> HTMLResponse:
    """The web status panel (open it with #user=ID&token=TOKEN: the fragment never reaches a server)."""
    return HTMLResponse(panel_page.page(), headers=panel_page.headers(settings.panel_frame_ancestors))
