"""Delivery latency from the MongoDB write: a document written into the stand-in -> the SSE bytes
read by a subscribed client.

Every piece runs as its own process, as in production: the MongoDB stand-in (``python -m
standin``), the projector (``projector run``), the API (``python -m api``) and a
``bench.loadgen`` client holding one SSE stream per user. This process is the application
writing to MongoDB: it stamps CLOCK_MONOTONIC (shared by every process of the machine) right
before each write. Each write sets the user's ``usdCredit`` to a number used once, and the
client records that value from each event it reads, so a write is matched to its event exactly.

Two phases: isolated changes (one write at a time, 100-300 ms apart: what a bot platform mostly
sees) and a steady load (writes at ``rate`` per second, sent in one bulk write every 5 ms).
Baseline in the same run: the same client process also subscribes to the read model's Redis
channels, so write -> the projector's SPUBLISH seen by a bare subscriber is the floor under the
API (matched on the (user, version) the SSE event carried). When ``BENCH_BEFORE_ROOT`` names
another checkout, the isolated phase is run once more with that checkout's projector (same
stand-in, API and clients): a before/after of the projector in the same run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .common import REDIS_URL, Row, percentile, redis_client, scratch_prefix, skipped
from .marks import Marks, isolated, latencies, steady
from .procs import APP_ROOT, HOST, LOGS, SERVICE_KEY, Client, Server, StandInProcess, api_available, stop_process

BENCH = "delivery"
DB = "app"
ECONOMY = "userEconomy"
# After the streams opened, before the isolated writes: the fan-out's subscriptions settle, and so
# does the API's heap: the opening grew it, which costs one full garbage collection within 10 s
# (api/gcpolicy.py); the isolated phase measures the streams held, not their opening (bench/storm.py).
SETTLE_S = 12.0
TARGETS = {"isolated": {50: 10.0, 99: 50.0}, "load": {99: 50.0}}
BEFORE_ROOT = os.environ.get("BENCH_BEFORE_ROOT")
API_ROOT = os.environ.get("BENCH_DELIVERY_API_ROOT")  # another checkout's API (a before/after in two runs)
KEEP = os.environ.get("BENCH_DELIVERY_KEEP")  # a directory: each run's raw timings are written there


@dataclass(frozen=True)
class Sizes:
    subscribers: int
    isolated: int  # writes, one at a time
    gap_s: tuple[float, float]  # pause between isolated writes
    rate: int  # writes per second in the load phase
    duration_s: float


FULL = Sizes(subscribers=1000, isolated=200, gap_s=(0.1, 0.3), rate=2000, duration_s=15)
QUICK = Sizes(subscribers=100, isolated=30, gap_s=(0.1, 0.3), rate=500, duration_s=3)
TINY = Sizes(subscribers=10, isolated=5, gap_s=(0.05, 0.1), rate=100, duration_s=1)  # the smoke test


def available() -> str | None:
    try:
        import standin  # noqa: F401
        from projector.worker import Worker  # noqa: F401
    except Exception as exc:
        return f"the stand-in or the projector is not importable ({exc.__class__.__name__}: {exc})"
    return api_available()


class Proc:
    """A process of the pipeline, logging to bench/results/logs, stopped by its own pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None, root: Path | None = None) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{name}-{os.getpid()}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=root or APP_ROOT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


def batches(proc: Proc) -> str:
    """"N events in M batches" from the counters a stopped projector logged, or ""."""
    found = re.findall(r"events=(\d+) batches=(\d+)", proc.log_path.read_text(errors="replace"))
    if not found:
        return ""
    events, count = (int(n) for n in found[-1])
    return f"{events} events in {count} batches ({events / max(1, count):.1f} per batch)"


def wait_until(what: str, check, proc: Proc, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{what}: the process exited ({proc.log_path})")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {timeout_s}s ({proc.log_path})")


def _measure(redis, standin, prefix: str, users: list[str], sizes: Sizes, marks: Marks, files: list[str],
             procs: list[Proc]) -> tuple[dict, dict]:
    """Fill the stand-in, start the projector, the API and the client, write both phases."""
    from pymongo import MongoClient

    from readmodel import Layout
    from readmodel.health import Health
    from readmodel.health import publish as publish_health
    from readmodel.health import read as read_health

    layout = Layout(prefix)
    mongo = MongoClient(standin.url, serverSelectionTimeoutMS=30_000)
    try:
        economy = mongo[DB][ECONOMY]
        economy.insert_many([{"_id": f"econ-{uid}", "masterAccountId": uid, "usdCredit": "1"} for uid in users])
        env = {"MONGO_URL": standin.url, "MONGO_DB": DB, "REDIS_URL": REDIS_URL, "KEY_PREFIX": prefix}
        projector = Proc("delivery-projector", [sys.executable, "-m", "projector", "run"], env)
        procs.append(projector)
        wait_until("the projector tails the change stream",
                   lambda: getattr(read_health(redis, layout), "state", "") == "tailing", projector)
        with Server("api", prefix, root=Path(API_ROOT) if API_ROOT else None) as api:
            client = Client({"mode": "sse", "host": HOST, "port": api.port, "path": "/users/{uid}/status/stream",
                             "key": SERVICE_KEY, "users": users, "records": files[0], "marker": "usdCredit",
                             "pubsub": {"store_env": {"REDIS_URL": REDIS_URL}, "prefix": prefix,
                                        "records": files[1]}})
            try:
                ready = client.wait_for("ready", timeout_s=120)
                if ready["ready"] != sizes.subscribers:
                    raise RuntimeError(f"only {ready['ready']} of {sizes.subscribers} streams opened: {ready['errors']}")
                time.sleep(SETTLE_S)
                isolated(economy, users, sizes, marks)
                time.sleep(1.0)
                pacing = steady(economy, users, sizes, marks)
                time.sleep(2.0)  # the last deliveries
                if BEFORE_ROOT:
                    projector.stop()
                    projector = Proc("delivery-projector-before", [sys.executable, "-m", "projector", "run"],
                                     env, root=Path(BEFORE_ROOT))
                    procs.append(projector)
                    publish_health(redis, layout, Health(state="stopped"))
                    wait_until("the older projector tails the change stream",
                               lambda: getattr(read_health(redis, layout), "state", "") == "tailing", projector)
                    time.sleep(1.0)
                    isolated(economy, users, sizes, marks, phase="before")
                    time.sleep(1.0)
                done = client.finish()
            finally:
                client.close()
    finally:
        mongo.close()
    return pacing, done


def keep(sizes: Sizes, marks: Marks, sse: list, pubsub: list) -> None:
    """Each write's (phase, user, write ns) and the client's SSE and floor records, for a timeline."""
    path = Path(KEEP, f"delivery-{sizes.subscribers}-{os.getpid()}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = {mark: [marks.phase[mark], uid, ns] for mark, (uid, ns) in marks.written.items()}
    path.write_text(json.dumps({"written": written, "sse": sse, "pubsub": pubsub}))


def isolated_writes() -> int:
    """Isolated writes of the full run: ``BENCH_DELIVERY_ISOLATED``, 200 by default (about 40 s; more
    to catch a rare pause, such as a full garbage collection of the API)."""
    raw = os.environ.get("BENCH_DELIVERY_ISOLATED", str(FULL.isolated))
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"BENCH_DELIVERY_ISOLATED must be a positive count, not {raw!r}")
    return int(raw)


def streams() -> list[int]:
    """Open streams of the full run: ``BENCH_DELIVERY_STREAMS`` (comma separated), 1k and 5k by default."""
    raw = os.environ.get("BENCH_DELIVERY_STREAMS", "1000,5000")
    try:
        counts = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"BENCH_DELIVERY_STREAMS must be counts separated by commas, not {raw!r}") from None
    if not counts or min(counts) < 1:
        raise SystemExit(f"BENCH_DELIVERY_STREAMS must name at least one positive count, not {raw!r}")
    return counts


def run(quick: bool = False, sizes: Sizes | None = None) -> list[Row]:
    reason = available()
    if reason:
        return [skipped(BENCH, "write -> SSE latency", reason)]
    if sizes is not None or quick:
        return _run(sizes or QUICK)
    return [row for count in streams() for row in _run(replace(FULL, subscribers=count, isolated=isolated_writes()))]


def _run(sizes: Sizes) -> list[Row]:
    redis = redis_client()
    users = [f"dlv-{i}" for i in range(sizes.subscribers)]
    marks = Marks()
    files = [tempfile.NamedTemporaryFile(suffix=".json", prefix=f"delivery-{n}-", delete=False).name for n in ("sse", "pubsub")]
    standin = StandInProcess()
    procs: list[Proc] = []
    try:
        with scratch_prefix(redis, "dlv") as prefix:
            try:
                pacing, done = _measure(redis, standin, prefix, users, sizes, marks, files, procs)
            finally:
                for proc in procs:  # before the prefix goes: a projector writes its health until it stops
                    proc.stop()
        projected = "; ".join(f"{proc.log_path.stem}: {batches(proc)}" for proc in procs if batches(proc))
        with open(files[0]) as f:
            sse = json.load(f)
        with open(files[1]) as f:
            pubsub = json.load(f)
        if KEEP:
            keep(sizes, marks, sse, pubsub)
    finally:
        standin.stop()
        for path in files:
            Path(path).unlink(missing_ok=True)
        redis.close()
    rows = []
    at = f", {sizes.subscribers:,} streams"
    phases = [("isolated", f"isolated writes{at}"), ("load", f"writes at {sizes.rate:,}/s{at}")]
    if BEFORE_ROOT:
        phases.append(("before", f"isolated writes{at}, projector at {Path(BEFORE_ROOT).name}"))
    for phase, label in phases:
        lat, floor, missing = latencies(marks, sse, pubsub, phase)
        if not lat:
            raise RuntimeError(f"no SSE event matched a {phase} write ({done})")
        written = sum(1 for p in marks.phase.values() if p == phase)
        note = (f"{written} writes over {sizes.subscribers} users/streams, {len(lat)} delivered, {missing} superseded "
                f"before delivery (a stream only gets the newest state); floor matched {len(floor)}")
        if phase == "load":
            note += f"; {pacing}; {projected}"
        for p in (50, 95, 99):
            rows.append(Row(BENCH, f"write -> SSE client p{p}, {label}", percentile(lat, p), "ms",
                            baseline=percentile(floor, p) if floor else None,
                            baseline_name="write -> Redis SPUBLISH at a bare subscriber",
                            target=TARGETS.get(phase, {}).get(p), higher_is_better=False,
                            note=note if p == 50 else "", extra={"max_ms": round(lat[-1], 2)} if p == 99 else {}))
    return rows
