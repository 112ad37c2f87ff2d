"""Fresh after my write: how soon a bot's read shows its own write, and what it costs, beside the
way a bot does it without ``afterClusterTime`` (read, and read again until the write shows), in
the same run.

The real pipeline on loopback: ``python -m standin`` (MongoDB's stand-in), ``projector run`` and
``python -m api``. This process is the bot: it writes a task through pymongo in a session and then
either reads once with ``afterClusterTime`` = the session's ``operationTime`` (the API waits for
the projector's announcement), or reads every ``poll_ms`` until the task is there. Alternating
writes of each kind; the time is from the write's acknowledgement to the answer showing it, and
the requests per write are counted.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import httpx

from .common import REDIS_URL, Row, percentile, progress, redis_client, scratch_prefix, skipped
from .delivery import Proc, available, wait_until
from .procs import HOST, SERVICE_KEY, Server, StandInProcess

BENCH = "fresh"
DB, TASKS = "app", "generationOutputs"


@dataclass(frozen=True)
class Sizes:
    writes: int  # of each kind
    poll_ms: int  # the baseline bot's pause between reads


FULL = Sizes(writes=200, poll_ms=20)
QUICK = Sizes(writes=30, poll_ms=20)
TINY = Sizes(writes=3, poll_ms=20)


def _write(collection, session, uid: str, gid: str) -> str:
    collection.insert_one({"_id": gid, "masterAccountId": uid, "status": "processing", "toolId": "flux",
                           "requestTimestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}, session=session)
    stamp = session.operation_time
    return f"{stamp.time}.{stamp.inc}"


def _shows(reply: httpx.Response, gid: str) -> bool:
    return reply.status_code == 200 and any(t["generationId"] == gid for t in reply.json()["liveTasks"])


def measure(api: Server, mongo, sizes: Sizes) -> dict[str, dict]:
    collection = mongo[DB][TASKS]
    results: dict[str, dict] = {kind: {"ms": [], "requests": 0, "behind": 0} for kind in ("fresh", "poll")}
    bar = progress(total=2 * sizes.writes, desc="fresh: write, then read", unit="write")
    with httpx.Client(base_url=f"http://{HOST}:{api.port}", headers={"Authorization": f"Bearer {SERVICE_KEY}"},
                      timeout=30) as client, mongo.start_session() as session:
        for n in range(2 * sizes.writes):
            kind = "fresh" if n % 2 == 0 else "poll"
            uid, gid = f"fresh-user-{n % 50}", f"fresh-gen-{n}"
            written = _write(collection, session, uid, gid)
            started = time.perf_counter()
            result = results[kind]
            if kind == "fresh":
                reply = client.get(f"/users/{uid}/status", params={"afterClusterTime": written})
                result["requests"] += 1
                if reply.status_code == 504:
                    result["behind"] += 1
                elif not _shows(reply, gid):
                    raise RuntimeError(f"a fresh-after-write read did not show {gid}: {reply.status_code} {reply.text[:200]}")
            else:
                while True:
                    reply = client.get(f"/users/{uid}/status")
                    result["requests"] += 1
                    if _shows(reply, gid):
                        break
                    time.sleep(sizes.poll_ms / 1000)
            result["ms"].append((time.perf_counter() - started) * 1000)
            bar.update()
    bar.close()
    return results


def run(quick: bool = False, sizes: Sizes | None = None) -> list[Row]:
    reason = available()
    if reason:
        return [skipped(BENCH, "fresh after write", reason)]

    from readmodel import Layout
    from readmodel.health import read as read_health

    sizes = sizes or (QUICK if quick else FULL)
    procs: list[Proc] = []
    with redis_client() as redis, StandInProcess() as standin:
        with scratch_prefix(redis, "fr") as prefix, standin.client() as mongo:
            try:
                env = {"MONGO_URL": standin.url, "MONGO_DB": DB, "REDIS_URL": REDIS_URL, "KEY_PREFIX": prefix}
                projector = Proc("fresh-projector", [sys.executable, "-m", "projector", "run"], env)
                procs.append(projector)
                wait_until("the projector tails the change stream",
                           lambda: getattr(read_health(redis, Layout(prefix)), "state", "") == "tailing", projector)
                with Server("api", prefix) as api:
                    results = measure(api, mongo, sizes)
            finally:
                for proc in procs:
                    proc.stop()
    fresh, poll = results["fresh"], results["poll"]
    for result in (fresh, poll):
        result["ms"].sort()
    note = (f"{sizes.writes} writes of each kind, alternating, one bot connection; the baseline reads every "
            f"{sizes.poll_ms} ms until the write shows; stand-in, projector and API on one shared machine")
    extra = {kind: {"p50_ms": percentile(r["ms"], 50), "p99_ms": percentile(r["ms"], 99),
                    "requests_per_write": r["requests"] / sizes.writes, "behind": r["behind"]}
             for kind, r in results.items()}
    return [
        Row(BENCH, "write -> a read showing it, p50 (afterClusterTime)", percentile(fresh["ms"], 50), "ms",
            baseline=percentile(poll["ms"], 50), baseline_name=f"read until shown (every {sizes.poll_ms} ms)",
            higher_is_better=False, note=note, extra=extra),
        Row(BENCH, "write -> a read showing it, p99 (afterClusterTime)", percentile(fresh["ms"], 99), "ms",
            baseline=percentile(poll["ms"], 99), baseline_name="read until shown", higher_is_better=False),
        Row(BENCH, "requests per write (afterClusterTime)", fresh["requests"] / sizes.writes, "req",
            baseline=poll["requests"] / sizes.writes, baseline_name="read until shown", higher_is_better=False,
            note=f"{fresh['behind']} of {sizes.writes} answered 504 projection_behind"),
    ]
