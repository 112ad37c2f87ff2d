"""SSE capacity: concurrent streams one API process holds, and its memory per stream.

For each level a fresh API process (its idle RSS is the baseline) gets that many streams, one
per user, from load-client processes (each under its own open-files limit and loopback source
address); once every stream has its first event, the server's RSS delta / streams is the cost of
a stream. The same is measured on the bare app's leanest possible stream (``bench.bare``) as the
floor of this stack, and, when ``BENCH_BEFORE_ROOT`` names another checkout (e.g. ``git archive``
of an older commit), on that checkout's API: a before/after in the same run. The marginal cost
of a stream is the RSS growth between the lowest and the highest level divided by the streams
added (the idle process's one-off costs and the first streams' warm-up drop out). With
``BENCH_BEFORE_PYTHON`` (another venv's interpreter) the "before" server runs under it: the same
code against other dependency versions (``BENCH_BEFORE_ROOT`` defaults to this checkout then).
Open files cannot exceed the hard RLIMIT_NOFILE this process inherited (an unprivileged
container cannot raise it), so a level above it is capped and says so.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from .common import Row, progress, redis_client, scratch_prefix, skipped
from .procs import HOST, SERVICE_KEY, Client, Server, api_available

BENCH = "capacity"
PER_CLIENT = 7000  # streams per load-client process
FD_RESERVE = 128  # the server's own files: listening socket, up to 100 pooled Redis connections, logs, epoll
TARGET_KB = 40  # marginal, with sse-starlette (issue 12); the hand-written stream had 24
BEFORE_PYTHON = os.environ.get("BENCH_BEFORE_PYTHON")
BEFORE_ROOT = os.environ.get("BENCH_BEFORE_ROOT") or (str(Path(__file__).parent.parent) if BEFORE_PYTHON else None)


@dataclass(frozen=True)
class Sizes:
    levels: tuple[int, ...]
    settle_s: float


FULL = Sizes(levels=(1000, 5000, 20000), settle_s=3)
QUICK = Sizes(levels=(200, 1000), settle_s=1)


def hold(kind: str, level: int, prefix: str, settle_s: float, root: Path | None = None,
         python: str | None = None) -> dict:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    streams = min(level, limit - FD_RESERVE)
    users = [f"cap-{i}" for i in range(streams)]
    with Server(kind, prefix, root=root, python=python) as api:
        time.sleep(settle_s)
        idle_kb = api.rss_kb()
        clients = []
        started = time.monotonic()
        try:
            for n, first in enumerate(range(0, streams, PER_CLIENT)):
                clients.append(Client({"mode": "sse", "host": HOST, "port": api.port,
                                       "path": "/users/{uid}/status/stream", "key": SERVICE_KEY,
                                       "users": users[first : first + PER_CLIENT],
                                       "local_ips": [f"127.0.{n + 1}.{i + 1}" for i in range(4)],
                                       "ready_timeout_s": 300}))
            bar = progress(total=streams, desc=f"{kind}: open {streams} streams", unit="stream")
            ready = failed = 0
            errors: dict[str, int] = {}
            for client in clients:
                report = client.wait_for("ready", timeout_s=600)
                ready += report["ready"]
                failed += report["failed"]
                for name, count in report["errors"].items():
                    errors[name] = errors.get(name, 0) + count
                bar.update(report["ready"] + report["failed"])
            bar.close()
            open_s = time.monotonic() - started
            time.sleep(settle_s)
            held_kb = api.rss_kb()
            fds = api.open_fds()
            alive = api.proc.poll() is None
            for client in clients:
                client.finish()
        finally:
            for client in clients:
                client.close()
    return {"level": level, "streams": streams, "ready": ready, "failed": failed, "errors": errors,
            "idle_kb": idle_kb, "held_kb": held_kb, "server_fds": fds, "server_alive": alive,
            "open_s": round(open_s, 2), "capped_by_nofile": streams < level, "nofile_hard": limit}


def marginal_kb(low: dict, high: dict) -> float | None:
    """RSS added per stream between two levels (KiB), or None when they hold the same number."""
    added = high["ready"] - low["ready"]
    return (high["held_kb"] - low["held_kb"]) / added if added > 0 else None


def run(quick: bool = False, sizes: Sizes | None = None) -> list[Row]:
    reason = api_available()
    if reason:
        return [skipped(BENCH, "SSE capacity", reason)]
    sizes = sizes or (QUICK if quick else FULL)
    before_root = Path(BEFORE_ROOT) if BEFORE_ROOT else None
    before_name = f"API under {BEFORE_PYTHON}" if BEFORE_PYTHON else f"API at {before_root.name if before_root else ''}"
    redis = redis_client()
    rows = []
    held: dict[str, list[dict]] = {"api": [], "bare": [], "before": []}
    with scratch_prefix(redis, "cap") as prefix:
        for level in sizes.levels:
            api = hold("api", level, prefix, sizes.settle_s)
            bare = hold("bare", level, prefix, sizes.settle_s)
            before = hold("api", level, prefix, sizes.settle_s, root=before_root, python=BEFORE_PYTHON) \
                if before_root else None
            held["api"].append(api)
            held["bare"].append(bare)
            if before:
                held["before"].append(before)
            per_stream = (api["held_kb"] - api["idle_kb"]) / max(1, api["ready"])
            bare_per_stream = (bare["held_kb"] - bare["idle_kb"]) / max(1, bare["ready"])
            cap = f"; capped at {api['streams']} by the hard open-files limit {api['nofile_hard']}" \
                if api["capped_by_nofile"] else ""
            errors = f"; errors {api['errors']}" if api["errors"] else ""
            errors += f"; bare errors {bare['errors']}" if bare["errors"] else ""
            note = (f"{api['ready']} of {api['streams']} streams got their first event in {api['open_s']}s "
                    f"(bare: {bare['ready']} in {bare['open_s']}s), {api['server_fds']} server fds{cap}{errors}")
            rows.append(Row(BENCH, f"streams held at {level:,}", api["ready"], "streams", baseline=bare["ready"],
                            baseline_name="bare SSE endpoint", target=level if level == sizes.levels[-1] else None,
                            note=note, extra={"api": api, "bare": bare, "before": before}))
            rows.append(Row(BENCH, f"server RSS with {api['ready']:,} streams", api["held_kb"] / 1024, "MiB",
                            baseline=api["idle_kb"] / 1024, baseline_name="idle API server"))
            rows.append(Row(BENCH, f"RSS per stream at {level:,}", per_stream, "KiB", baseline=bare_per_stream,
                            baseline_name="bare SSE endpoint", higher_is_better=False))
            if before:
                before_per_stream = (before["held_kb"] - before["idle_kb"]) / max(1, before["ready"])
                rows.append(Row(BENCH, f"RSS per stream at {level:,}", per_stream, "KiB", baseline=before_per_stream,
                                baseline_name=before_name, higher_is_better=False,
                                note=f"{before['ready']} of {before['streams']} streams opened in {before['open_s']}s"))
    low, high = sizes.levels[0], sizes.levels[-1]
    span = f"{held['api'][0]['ready']:,} -> {held['api'][-1]['ready']:,}"
    marginal = marginal_kb(held["api"][0], held["api"][-1])
    rows.append(Row(BENCH, f"marginal RSS per stream, {span} streams", marginal, "KiB",
                    baseline=marginal_kb(held["bare"][0], held["bare"][-1]), baseline_name="bare SSE endpoint",
                    target=TARGET_KB, higher_is_better=False,
                    note=f"(RSS at {high:,} - RSS at {low:,}) / streams added, one fresh server per level"))
    if held["before"]:
        rows.append(Row(BENCH, f"marginal RSS per stream, {span} streams", marginal, "KiB",
                        baseline=marginal_kb(held["before"][0], held["before"][-1]),
                        baseline_name=before_name, higher_is_better=False))
    redis.close()
    return rows
