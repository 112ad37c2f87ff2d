"""Reconnect storm: ``STREAMS_PER_PROCESS`` streams opened within two seconds on one API process.

What panels do when an API process restarts and every EventSource reconnects at once. Each
stream's time to its first snapshot (from the moment it starts connecting) is measured for the
storm and, in the same run on a fresh server, for the same streams opened at a steady pace (the
baseline: what the server does when openings do not pile up). Every stream must get its first
snapshot: a 503 or a connection-pool timeout is a failed stream, reported in the note. The
server's CPU per stream opened is measured too (process CPU: what other load on a shared
machine distorts least). With ``BENCH_BEFORE_ROOT`` naming another checkout, the storm is also
run on that checkout's API (a before/after in one run).
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from readmodel import BalanceChange, Layout, ReadModel
from readmodel.records import balance_record

from .common import Row, cpu_seconds, now_iso, percentile, progress, redis_client, scratch_prefix, skipped
from .procs import HOST, SERVICE_KEY, Client, Server, api_available

BENCH = "storm"
FD_RESERVE = 256  # the server's own files (listening socket, Redis pool, logs) and the client's
BEFORE_ROOT = os.environ.get("BENCH_BEFORE_ROOT")


@dataclass(frozen=True)
class Sizes:
    streams: int  # the API's STREAMS_PER_PROCESS is set to this
    storm_s: float  # the storm opens every stream within this many seconds
    paced_per_s: float  # the baseline opens them at this rate
    clients: int = 2  # load-client processes (each opens its share, spread over the same time)
    pool: int | None = None  # the API's REDIS_MAX_CONNECTIONS (None: its default)


FULL = Sizes(streams=10_000, storm_s=2.0, paced_per_s=200)
QUICK = Sizes(streams=2_000, storm_s=2.0, paced_per_s=200)
# tests/test_bench_smoke.py: a small pool makes a modest storm exhaust it the way 10,000 streams
# exhaust the default one (each first read used to wait for a pool connection of its own).
TINY = Sizes(streams=1_500, storm_s=2.0, paced_per_s=300, pool=8)


def seed(prefix: str, users: list[str]) -> None:
    """A balance for every user, so each first snapshot is a real read."""
    client = redis_client()
    model = ReadModel(client, Layout(prefix))
    for start in range(0, len(users), 1000):
        model.apply([BalanceChange(f"econ-{uid}", f"{1_800_000_000:010d}.{n:010d}", uid,
                                   balance_record("1.250000", 3378, 42))
                     for n, uid in enumerate(users[start:start + 1000], start)], now_iso())
    client.close()


def open_streams(kind: str, prefix: str, users: list[str], over_s: float, sizes: Sizes, root: Path | None = None) -> dict:
    """Open one stream per user over ``over_s`` seconds on a fresh server; what every stream saw."""
    env = {"STREAMS_PER_PROCESS": str(len(users))}
    if sizes.pool is not None:
        env["REDIS_MAX_CONNECTIONS"] = str(sizes.pool)
    with Server("api", prefix, extra_env=env, root=root) as api:
        cpu_before = cpu_seconds(api.pid)
        clients = [Client({"mode": "sse", "host": HOST, "port": api.port, "path": "/users/{uid}/status/stream",
                           "key": SERVICE_KEY, "users": users[n::sizes.clients], "open_over_s": over_s,
                           "local_ips": [f"127.0.{n + 1}.{i + 1}" for i in range(4)],
                           # An EventSource waits for the response as long as it takes.
                           "head_timeout_s": 300, "ready_timeout_s": 300})
                   for n in range(sizes.clients)]
        first_ms: list[float] = []
        ready = failed = 0
        errors: dict[str, int] = {}
        try:
            bar = progress(total=len(users), desc=f"storm: {kind}", unit="stream")
            for client in clients:
                report = client.wait_for("ready", timeout_s=300)
                ready += report["ready"]
                failed += report["failed"]
                first_ms += report["first_ms"]
                for name, count in report["errors"].items():
                    errors[name] = errors.get(name, 0) + count
                bar.update(report["ready"] + report["failed"])
            bar.close()
            cpu = cpu_seconds(api.pid) - cpu_before
            for client in clients:
                client.finish()
        finally:
            for client in clients:
                client.close()
    first_ms.sort()
    return {"kind": kind, "streams": len(users), "over_s": over_s, "ready": ready, "failed": failed,
            "errors": errors, "p50_ms": percentile(first_ms, 50), "p99_ms": percentile(first_ms, 99),
            "max_ms": first_ms[-1] if first_ms else None, "server_cpu_s": round(cpu, 3)}


def _note(result: dict) -> str:
    errors = f"; errors {result['errors']}" if result["errors"] else ""
    return (f"{result['ready']} of {result['streams']} streams got their first snapshot, opened over "
            f"{result['over_s']:g} s; max {result['max_ms']} ms; server CPU {result['server_cpu_s']} s{errors}")


def run(quick: bool = False, sizes: Sizes | None = None) -> list[Row]:
    reason = api_available()
    if reason:
        return [skipped(BENCH, "reconnect storm", reason)]
    sizes = sizes or (QUICK if quick else FULL)
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if sizes.streams > nofile - FD_RESERVE:
        return [skipped(BENCH, "reconnect storm", f"{sizes.streams} streams need more than the hard open-files limit {nofile}")]
    users = [f"storm-{i}" for i in range(sizes.streams)]
    redis = redis_client()
    results: dict[str, dict] = {}
    with scratch_prefix(redis, "st") as prefix:
        seed(prefix, users)
        results["storm"] = open_streams("storm", prefix, users, sizes.storm_s, sizes)
        results["paced"] = open_streams("paced", prefix, users, sizes.streams / sizes.paced_per_s, sizes)
        if BEFORE_ROOT:
            results["before"] = open_streams("storm, before", prefix, users, sizes.storm_s, sizes, root=Path(BEFORE_ROOT))
    redis.close()
    storm, paced = results["storm"], results["paced"]
    name = f"{sizes.streams:,} streams opened in {sizes.storm_s:g} s"
    pool = f", a pool of {sizes.pool} Redis connections" if sizes.pool is not None else ""
    name += pool
    paced_name = f"paced opening ({sizes.paced_per_s:g}/s)"
    rows = [
        Row(BENCH, f"{name}: got their first snapshot", storm["ready"], "streams", baseline=paced["ready"],
            baseline_name=paced_name, target=sizes.streams, note=_note(storm), extra=results),
        Row(BENCH, f"{name}: time to first snapshot p50", storm["p50_ms"], "ms", baseline=paced["p50_ms"],
            baseline_name=paced_name, higher_is_better=False, note=_note(paced)),
        Row(BENCH, f"{name}: time to first snapshot p99", storm["p99_ms"], "ms", baseline=paced["p99_ms"],
            baseline_name=paced_name, higher_is_better=False),
        Row(BENCH, f"{name}: server CPU per stream opened", storm["server_cpu_s"] / sizes.streams * 1000, "ms",
            baseline=paced["server_cpu_s"] / sizes.streams * 1000, baseline_name=paced_name, higher_is_better=False),
    ]
    if "before" in results:
        before = results["before"]
        label = f"API at {Path(BEFORE_ROOT or '').name}"
        rows += [
            Row(BENCH, f"{name}: got their first snapshot", storm["ready"], "streams", baseline=before["ready"],
                baseline_name=label, note=_note(before)),
            Row(BENCH, f"{name}: time to first snapshot p99", storm["p99_ms"], "ms", baseline=before["p99_ms"],
                baseline_name=label, higher_is_better=False),
        ]
    return rows
