"""SSE capacity: concurrent streams one API process holds, and its memory per stream.

For each level a fresh API process (its idle RSS is the baseline) gets that many streams, one
per user, from load-client processes (each under its own open-files limit and loopback source
address); once every stream has its first event, the server's RSS delta / streams is the cost of
a stream. The same is measured on the bare app's leanest possible stream (``bench.bare``) as the
floor of this stack. Open files cannot exceed the hard RLIMIT_NOFILE this process inherited (an unprivileged
container cannot raise it), so a level above it is capped and says so.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

from .common import Row, progress, redis_client, scratch_prefix, skipped
from .procs import HOST, SERVICE_KEY, Client, Server, api_available

BENCH = "capacity"
PER_CLIENT = 7000  # streams per load-client process
FD_RESERVE = 128  # the server's own files: listening socket, up to 100 pooled Redis connections, logs, epoll
TARGET_KB = 24


@dataclass(frozen=True)
class Sizes:
    levels: tuple[int, ...]
    settle_s: float


FULL = Sizes(levels=(1000, 5000, 20000), settle_s=3)
QUICK = Sizes(levels=(200, 1000), settle_s=1)


def hold(kind: str, level: int, prefix: str, settle_s: float) -> dict:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    streams = min(level, limit - FD_RESERVE)
    users = [f"cap-{i}" for i in range(streams)]
    with Server(kind, prefix) as api:
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


def run(quick: bool = False, sizes: Sizes | None = None) -> list[Row]:
    reason = api_available()
    if reason:
        return [skipped(BENCH, "SSE capacity", reason)]
    sizes = sizes or (QUICK if quick else FULL)
    redis = redis_client()
    rows = []
    with scratch_prefix(redis, "cap") as prefix:
        for level in sizes.levels:
            api = hold("api", level, prefix, sizes.settle_s)
            bare = hold("bare", level, prefix, sizes.settle_s)
            per_stream = (api["held_kb"] - api["idle_kb"]) / max(1, api["ready"])
            bare_per_stream = (bare["held_kb"] - bare["idle_kb"]) / max(1, bare["ready"])
            cap = f"; capped at {api['streams']} by the hard open-files limit {api['nofile_hard']}" \
                if api["capped_by_nofile"] else ""
            errors = f"; errors {api['errors']}" if api["errors"] else ""
            errors += f"; bare errors {bare['errors']}" if bare["errors"] else ""
            note = (f"{api['ready']} of {api['streams']} streams got their first event in {api['open_s']}s "
                    f"(bare: {bare['ready']} in {bare['open_s']}s), {api['server_fds']} server fds{cap}{errors}")
            top = level == max(sizes.levels)
            rows.append(Row(BENCH, f"streams held at {level:,}", api["ready"], "streams", baseline=bare["ready"],
                            baseline_name="bare SSE endpoint", target=level if top else None, note=note,
                            extra={"api": api, "bare": bare}))
            rows.append(Row(BENCH, f"server RSS with {api['ready']:,} streams", api["held_kb"] / 1024, "MiB",
                            baseline=api["idle_kb"] / 1024, baseline_name="idle API server"))
            rows.append(Row(BENCH, f"RSS per stream at {level:,}", per_stream, "KiB", baseline=bare_per_stream,
                            baseline_name="bare SSE endpoint", target=TARGET_KB if top else None,
                            higher_is_better=False))
    redis.close()
    return rows
