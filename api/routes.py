"""REST endpoints: snapshots for bots, rendered status text, health, readiness, metrics, panel."""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from readmodel.connect import StoreError

from readmodel import aread_heartbeat_ms

from . import snapshots
from .deps import LayoutDep, MetricsDep, ReadableUser, RedisDep, SettingsDep
from .errors import ErrorBody, NotReady
from .models import Health, Ready, Snapshot, StatusReport, StatusText
from .render import markup_for, render

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "malformed id or parameter"},
    401: {"model": ErrorBody, "description": "no, bad or expired credentials"},
    403: {"model": ErrorBody, "description": "a user token for another user"},
    503: {"model": ErrorBody, "description": "Redis unavailable"},
}

users = APIRouter(tags=["status"], responses=ERRORS)
ops = APIRouter(tags=["operations"])


@users.get("/users/{masterAccountId}/status", response_model=Snapshot)
async def status(uid: ReadableUser, redis: RedisDep, layout: LayoutDep, settings: SettingsDep) -> dict[str, Any]:
    """The user's current snapshot (version 0 and empty when nothing is known)."""
    return await snapshots.read(redis, layout, uid, settings.estimate_cap_percent, settings.live_tasks_shown)


def _number(text: str | None) -> float | None:
    return None if text is None else float(Decimal(text))


@users.get("/users/{masterAccountId}/status-report", response_model=StatusReport)
async def status_report(uid: ReadableUser, redis: RedisDep, layout: LayoutDep, settings: SettingsDep) -> dict[str, Any]:
    """The legacy shape the bots consume today (walletAddress is always null: not ours)."""
    snap = await snapshots.read(redis, layout, uid, settings.estimate_cap_percent, settings.live_tasks_shown)
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


@users.get("/users/{masterAccountId}/status/text", response_model=StatusText)
async def status_text(
    uid: ReadableUser,
    redis: RedisDep,
    layout: LayoutDep,
    settings: SettingsDep,
    platform: Annotated[Literal["telegram", "discord"], Query(description="where the text will be sent")],
    markup: Annotated[
        Literal["html", "markdownv2"] | None, Query(description="Telegram only: parse mode (default html)")
    ] = None,
) -> dict[str, Any]:
    """The status message rendered for a chat platform, escaped for its parse mode."""
    snap = await snapshots.read(redis, layout, uid, settings.estimate_cap_percent, settings.live_tasks_shown)
    chosen = markup_for(platform, markup)
    return {
        "masterAccountId": uid,
        "version": snap["version"],
        "platform": platform,
        "parseMode": chosen.parse_mode,
        "text": render(snap, chosen, snapshots.now_ms(), settings.text_task_limit),
    }


@ops.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    """The process is up (no dependencies checked)."""
    return {"status": "ok"}


@ops.get("/readyz", response_model=Ready, responses={503: {"model": ErrorBody, "description": "not ready"}})
async def readyz(redis: RedisDep, layout: LayoutDep, settings: SettingsDep) -> dict[str, Any]:
    """Redis answers and the projector's heartbeat is fresh."""
    try:
        heartbeat = await aread_heartbeat_ms(redis, layout)
    except StoreError as exc:
        raise NotReady(f"Redis does not answer: {exc}") from None
    if heartbeat is None:
        raise NotReady("no projector heartbeat in Redis yet")
    age = snapshots.now_ms() - heartbeat
    if age > settings.ready_max_heartbeat_age_s * 1000:
        raise NotReady(f"the projector's heartbeat is {age} ms old (limit {settings.ready_max_heartbeat_age_s:g} s)")
    return {"status": "ready", "projectorHeartbeatAgeMs": age}


@ops.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


_PANEL = resources.files("api").joinpath("static/panel.html")


@ops.get("/panel", response_class=HTMLResponse, tags=["panel"])
async def panel() -> HTMLResponse:
    """The web status panel (open it with ?user=ID&token=TOKEN)."""
    return HTMLResponse(
        _PANEL.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    )
