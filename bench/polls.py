"""Cheap polls: what a 304 poll (If-None-Match with the current ETag) costs the API beside a full
poll of the same snapshots, in the same run.

One API process under uvicorn (the real ``python -m api``) serves users who each have a balance
and ``tasks`` live tasks; this process polls them round-robin over one keep-alive connection,
alternating rounds of full polls and of 304 polls. The measure is the API process's CPU time per
answered poll (``/proc``: less distorted by other work on a shared machine than wall time), and
the bytes on the wire per answer; the best round of each kind is kept.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import httpx

from readmodel import LIVE, BalanceChange, Layout, ReadModel, TaskChange, position
from readmodel.records import balance_record, live_task_record

from .common import Row, cpu_seconds, now_iso, progress, redis_client, scratch_prefix, skipped
from .procs import HOST, SERVICE_KEY, Server, api_available

BENCH = "polls"


@dataclass(frozen=True)
class Sizes:
    users: int
    tasks: int  # live tasks per user
    polls: int  # polls per round
    rounds: int  # rounds of each kind, alternating


FULL = Sizes(users=200, tasks=5, polls=2_000, rounds=3)
QUICK = Sizes(users=50, tasks=5, polls=500, rounds=2)
TINY = Sizes(users=5, tasks=2, polls=40, rounds=1)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def populate(prefix: str, sizes: Sizes) -> list[str]:
    """Users with a balance and ``sizes.tasks`` live tasks each (reported progress)."""
    client = redis_client()
    model = ReadModel(client, Layout(prefix))
    now_ms = int(time.time() * 1000)
    seq = position(now_ms // 1000, 1)
    users = [f"poll-user-{n}" for n in range(sizes.users)]
    for uid in users:
        changes: list = [BalanceChange(f"econ-{uid}", seq, uid, balance_record("12.345678", 33366, 1200))]
        for t in range(sizes.tasks):
            gid = f"{uid}-gen-{t}"
            visible = {"generationId": gid, "idHash": hashlib.sha256(gid.encode()).hexdigest()[:5],
                       "status": "processing", "progressPercent": 10.0 * t, "progressSource": "reported",
                       "toolId": "flux-schnell", "toolDisplayName": "FLUX Schnell", "costUsd": "0.012469",
                       "startedAt": _iso(now_ms - 60_000), "updatedAt": _iso(now_ms), "sourcePlatform": "telegram"}
            stale_at = now_ms + 24 * 3600 * 1000
            # A typical duration of an hour: no task turns stalled during the run (that changes the ETag).
            changes.append(TaskChange(gid, seq, uid, LIVE, live_task_record(visible, 3_600_000, stale_at), stale_at))
        model.apply(changes, now_iso())
    client.close()
    return users


def poll_round(server: Server, users: list[str], sizes: Sizes, tags: dict[str, str] | None) -> dict:
    """``sizes.polls`` polls round-robin; with ``tags``, each sends If-None-Match (expects 304)."""
    expected = 304 if tags else 200
    headers = {"Authorization": f"Bearer {SERVICE_KEY}"}
    wire = 0
    with httpx.Client(base_url=f"http://{HOST}:{server.port}", headers=headers, timeout=30) as client:
        client.get(f"/users/{users[0]}/status")  # the connection is open before the clock starts
        cpu_before, started = cpu_seconds(server.pid), time.perf_counter()
        for n in range(sizes.polls):
            uid = users[n % len(users)]
            extra = {"If-None-Match": tags[uid]} if tags else None
            reply = client.get(f"/users/{uid}/status", headers=extra)
            if reply.status_code != expected:
                raise RuntimeError(f"poll of {uid}: {reply.status_code}, expected {expected}")
            wire += len(reply.content) + sum(len(k) + len(v) + 4 for k, v in reply.headers.items())
        seconds, cpu = time.perf_counter() - started, cpu_seconds(server.pid) - cpu_before
    return {"cpu_us": cpu / sizes.polls * 1e6, "bytes": wire / sizes.polls, "rps": sizes.polls / seconds}


def run(quick: bool = False, sizes: Sizes | None = None) -> list[Row]:
    reason = api_available()
    if reason:
        return [skipped(BENCH, "polls", reason)]
    sizes = sizes or (QUICK if quick else FULL)
    redis = redis_client()
    rounds: dict[str, list[dict]] = {"full": [], "304": []}
    with scratch_prefix(redis, "pl") as prefix:
        users = populate(prefix, sizes)
        with Server("api", prefix) as api:
            with httpx.Client(base_url=f"http://{HOST}:{api.port}", timeout=30,
                              headers={"Authorization": f"Bearer {SERVICE_KEY}"}) as client:
                tags = {uid: client.get(f"/users/{uid}/status").headers["ETag"] for uid in users}
            bar = progress(total=2 * sizes.rounds, desc="polls: full, then 304, alternating", unit="round")
            for n in range(sizes.rounds):
                order = (("full", None), ("304", tags)) if n % 2 == 0 else (("304", tags), ("full", None))
                for kind, given in order:
                    rounds[kind].append(poll_round(api, users, sizes, given))
                    bar.update()
            bar.close()
    redis.close()
    full = min(rounds["full"], key=lambda r: r["cpu_us"])
    cheap = min(rounds["304"], key=lambda r: r["cpu_us"])
    note = (f"{sizes.users} users with {sizes.tasks} live tasks each, {sizes.polls} polls a round over one keep-alive "
            f"connection, best of {sizes.rounds} alternating rounds; API process CPU (shared machine)")
    extra = {"full": rounds["full"], "304": rounds["304"]}
    return [
        Row(BENCH, "304 poll: API CPU per poll", cheap["cpu_us"], "µs", baseline=full["cpu_us"],
            baseline_name="full poll (200 + body)", higher_is_better=False, note=note, extra=extra),
        Row(BENCH, "304 poll: bytes per answer (headers + body)", cheap["bytes"], "B", baseline=full["bytes"],
            baseline_name="full poll", higher_is_better=False),
        Row(BENCH, "304 poll: polls/s, one connection", cheap["rps"], "req/s", baseline=full["rps"],
            baseline_name="full poll"),
    ]
