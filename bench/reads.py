"""Snapshot reads: GET /users/{id}/status on the API beside a bare Starlette app doing the same read.

Both run under uvicorn in their own processes with the same settings (log level warning, so no
access log line per request), over the same read model in the local Redis; the load comes from
a separate ``bench.loadgen`` process: first closed-loop (how many requests/s), then at a fixed
1k requests/s (latency, measured from each request's scheduled send time).
"""

from __future__ import annotations

from dataclasses import dataclass

from projector.normalize import Rules
from projector.projection import event_change
from readmodel import Layout, ReadModel

from .common import Row, now_iso, percentile, progress, redis_client, scratch_prefix, skipped
from .events import KINDS, Stream
from .procs import HOST, SERVICE_KEY, Client, Server, api_available

BENCH = "reads"
PATH = "/users/{uid}/status"


@dataclass(frozen=True)
class Sizes:
    users: int
    events: int
    connections: int
    warmup_s: float
    duration_s: float
    rate: int
    rounds: int  # alternating bare/api rounds; the best of each is kept (the machine is shared)


FULL = Sizes(users=10_000, events=60_000, connections=32, warmup_s=2, duration_s=10, rate=1000, rounds=2)
QUICK = Sizes(users=500, events=3_000, connections=16, warmup_s=0.5, duration_s=2, rate=1000, rounds=1)


def populate(prefix: str, sizes: Sizes) -> list[str]:
    """A read model of ``users`` users with balances and live tasks; returns the user ids."""
    client = redis_client()
    model = ReadModel(client, Layout(prefix))
    stream = Stream(users=sizes.users, in_flight=sizes.users * 2)
    rules = Rules()
    batch = []
    bar = progress(total=sizes.events, desc="populate read model", unit="ev")
    for event in stream.events(sizes.events):
        batch.append(event_change(event, KINDS, rules))
        if len(batch) == 1000:
            model.apply(batch, now_iso())
            bar.update(len(batch))
            batch = []
    if batch:
        model.apply(batch, now_iso())
    bar.close()
    client.close()
    return stream.user_ids


def load(server: Server, users: list[str], sizes: Sizes, rate: int) -> dict:
    client = Client({"mode": "get", "host": HOST, "port": server.port, "path": PATH, "key": SERVICE_KEY,
                     "users": users, "connections": sizes.connections, "rate": rate,
                     "warmup_s": sizes.warmup_s, "duration_s": sizes.duration_s})
    try:
        report = client.wait_for("done", timeout_s=sizes.warmup_s + sizes.duration_s + 60)
    finally:
        client.close()
    latencies = sorted(report.pop("latencies_ms"))
    ok = report["statuses"].get("200", 0)
    report.update(rps=report["requests"] / report["seconds"], ok=ok,
                  p50=percentile(latencies, 50), p99=percentile(latencies, 99), max=latencies[-1] if latencies else None)
    return report


def best(reports: list[dict], phase: str) -> dict:
    """The least disturbed round: most requests/s (closed loop) or lowest p99 (fixed rate)."""
    chosen = max(reports, key=lambda r: r["rps"]) if phase == "max" else min(reports, key=lambda r: r["p99"])
    return {**chosen, "rounds": [{k: r[k] for k in ("rps", "p50", "p99")} for r in reports]}


def run(quick: bool = False, sizes: Sizes | None = None) -> list[Row]:
    reason = api_available()
    if reason:
        return [skipped(BENCH, "snapshot reads", reason)]
    sizes = sizes or (QUICK if quick else FULL)
    redis = redis_client()
    with scratch_prefix(redis, "rd") as prefix:
        users = populate(prefix, sizes)
        with Server("api", prefix) as api, Server("bare", prefix) as bare:
            rounds: dict[tuple[str, str], list[dict]] = {}
            bar = progress(total=4 * sizes.rounds, desc="reads: closed loop, then fixed rate", unit="phase")
            for phase, rate in (("max", 0), ("fixed", sizes.rate)):
                for n in range(sizes.rounds):
                    order = (("bare", bare), ("api", api)) if n % 2 == 0 else (("api", api), ("bare", bare))
                    for name, server in order:
                        rounds.setdefault((name, phase), []).append(load(server, users, sizes, rate))
                        bar.update()
            bar.close()
    redis.close()
    for (name, phase), reports in rounds.items():
        for report in reports:
            if report["ok"] != report["requests"]:
                raise RuntimeError(f"{name} {phase}: non-200 answers {report['statuses']}")
    results = {key: best(reports, key[1]) for key, reports in rounds.items()}
    api_max, bare_max = results[("api", "max")], results[("bare", "max")]
    api_fixed, bare_fixed = results[("api", "fixed")], results[("bare", "fixed")]
    note = (f"{len(users)} users, {sizes.connections} keep-alive connections from one client process, "
            f"{sizes.duration_s:g}s after {sizes.warmup_s:g}s warm-up, best of {sizes.rounds} alternating rounds")
    fixed_note = f"scheduler max late {api_fixed.get('scheduler_max_late_ms')} ms (api run)"
    return [
        Row(BENCH, "API GET /status, closed loop", api_max["rps"], "req/s", baseline=bare_max["rps"],
            baseline_name="bare Starlette + aread_snapshot", ratio_target=0.5, note=note,
            extra={"api": api_max, "bare": bare_max}),
        Row(BENCH, "API p99, closed loop", api_max["p99"], "ms", baseline=bare_max["p99"], baseline_name="bare",
            higher_is_better=False),
        Row(BENCH, f"API p99 at {sizes.rate} req/s fixed rate", api_fixed["p99"], "ms", baseline=bare_fixed["p99"],
            baseline_name="bare", target=10, higher_is_better=False, note=fixed_note,
            extra={"api": api_fixed, "bare": bare_fixed}),
        Row(BENCH, f"API p50 at {sizes.rate} req/s fixed rate", api_fixed["p50"], "ms", baseline=bare_fixed["p50"],
            baseline_name="bare", higher_is_better=False),
    ]
