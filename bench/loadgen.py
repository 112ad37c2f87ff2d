"""Load-generating client, run as its own process: ``python -m bench.loadgen CONFIG.json``.

Plain asyncio sockets speaking HTTP/1.1 (keep-alive GETs, chunked SSE streams), so the client
costs as little CPU as a Python client can. It reports JSON lines on stdout:

* ``sse`` mode opens one stream per entry of ``users``, prints ``{"ready": n, "failed": m,
  "first_ms": [...]}`` once every stream has its first event (the current snapshot; ``first_ms``:
  each stream's time from its start to that event). With ``open_over_s`` the streams start
  spread evenly over that many seconds, none waiting for another (a reconnect storm); without
  it at most ``connect_concurrency`` connect at once. Then it keeps reading until a line arrives
  on stdin, then writes every ``(user, version, monotonic ns)`` it saw to ``records`` (if set)
  and prints ``{"done": ...}``. With ``marker`` set to a JSON key, each record also carries that
  key's string value from the event's data (``(user, version, ns, value)``).
* ``get`` mode sends GETs for ``duration_s`` (after ``warmup_s``): closed-loop over
  ``connections`` when ``rate`` is 0, else at a fixed rate, latency measured from each
  request's scheduled time (no coordinated omission). Prints ``{"done": ..., "latencies_ms": ...}``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import resource
import sys
import time
from typing import Any

from readmodel import Layout


def _request(path: str, host: str, key: str | None, accept: str = "application/json") -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Accept: {accept}\r\n\r\n".encode()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return bytes(body)
            body += chunk[:-2]
    raise RuntimeError("response without a length")


# ---------------------------------------------------------------------------- SSE


class SseStats:
    def __init__(self) -> None:
        self.first_events = 0
        self.failed = 0
        self.errors: dict[str, int] = {}
        self.records: list[tuple[str, int, int]] = []
        self.first_ms: list[float] = []


async def _stream(cfg: dict[str, Any], uid: str, local_ip: str | None, stats: SseStats,
                  connect_gate: asyncio.Semaphore, stop: asyncio.Event, record: bool, start_at: float | None = None) -> None:
    path = cfg["path"].format(uid=uid)
    writer = None
    try:
        if start_at is not None:
            await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        started = time.monotonic()
        async with connect_gate:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                cfg["host"], cfg["port"], local_addr=(local_ip, 0) if local_ip else None, limit=256 * 1024), 30)
            writer.write(_request(path, f"{cfg['host']}:{cfg['port']}", cfg.get("key"), "text/event-stream"))
            status, headers = await asyncio.wait_for(_read_head(reader), cfg.get("head_timeout_s", 30))
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        marker = cfg.get("marker")
        marker = f'"{marker}":"'.encode() if marker else None
        buffer = b""
        first = True
        while not stop.is_set():
            if chunked:
                size = int((await reader.readline()).split(b";")[0], 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                buffer += data[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    break
                buffer += data
            now = time.monotonic_ns()
            *messages, buffer = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
            for message in messages:
                version = None
                mark = None
                for line in message.split(b"\n"):
                    if line.startswith(b"id:"):
                        version = int(line[3:].strip())
                        if first:
                            stats.first_events += 1
                            stats.first_ms.append((time.monotonic() - started) * 1000)
                            first = False
                    elif marker and line.startswith(b"data:"):
                        mark = _marked(line, marker)
                if record and version is not None:
                    stats.records.append((uid, version, now) if marker is None else (uid, version, now, mark))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        stats.failed += 1
        name = f"{exc.__class__.__name__}: {exc}"[:120]
        stats.errors[name] = stats.errors.get(name, 0) + 1
    finally:
        if writer is not None:
            writer.close()


def _marked(data_line: bytes, marker: bytes) -> str | None:
    """The string value after ``"marker":"`` in a data line (the first one), or None."""
    at = data_line.find(marker)
    if at < 0:
        return None
    start = at + len(marker)
    return data_line[start:data_line.index(b'"', start)].decode()


async def _pubsub(cfg: dict[str, Any], users: list[str], records: list[tuple[str, int, int]], stop: asyncio.Event,
                  subscribed: asyncio.Event) -> None:
    """The baseline listener: every user's channel straight from Redis (SSUBSCRIBE), no API in between."""
    from readmodel.connect import apubsub_client, arefresh
    from readmodel.settings import store_settings

    client = apubsub_client(store_settings(cfg["store_env"]), "bench-baseline")
    await arefresh(client)
    pubsub = client.pubsub()
    receive = getattr(pubsub, "get_sharded_message", pubsub.get_message)
    layout = Layout(cfg["prefix"])
    waiting = {layout.channel(uid) for uid in users}
    for start in range(0, len(users), 500):
        await pubsub.ssubscribe(*(layout.channel(uid) for uid in users[start : start + 500]))
    try:
        while not stop.is_set():
            message = await receive(ignore_subscribe_messages=False, timeout=0.02)
            if message is None:
                continue
            if message["type"] == "ssubscribe":
                waiting.discard(message["channel"].decode())
                if not waiting:
                    subscribed.set()
            elif message["type"] == "smessage":
                records.append((layout.user_of_channel(message["channel"].decode()), int(message["data"]),
                                time.monotonic_ns()))
    finally:
        await pubsub.aclose()
        await client.aclose()


async def run_sse(cfg: dict[str, Any]) -> None:
    stats = SseStats()
    stop = asyncio.Event()
    pubsub_records: list[tuple[str, int, int]] = []
    pubsub_task = None
    if cfg.get("pubsub"):
        subscribed = asyncio.Event()
        pubsub_task = asyncio.create_task(_pubsub(cfg["pubsub"], cfg["users"], pubsub_records, stop, subscribed))
        await asyncio.wait_for(subscribed.wait(), 30)
    users = cfg["users"]
    over_s = cfg.get("open_over_s")
    gate = asyncio.Semaphore(len(users) if over_s is not None else cfg.get("connect_concurrency", 50))
    ips = cfg.get("local_ips") or [None]
    record = bool(cfg.get("records"))
    begin = time.monotonic()
    tasks = [asyncio.create_task(_stream(cfg, uid, ips[i % len(ips)], stats, gate, stop, record,
                                         None if over_s is None else begin + over_s * i / len(users)))
             for i, uid in enumerate(users)]
    total = len(tasks)
    deadline = time.monotonic() + cfg.get("ready_timeout_s", 120)
    while stats.first_events + stats.failed < total and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    _say({"ready": stats.first_events, "failed": stats.failed, "errors": stats.errors,
          "first_ms": [round(ms, 2) for ms in stats.first_ms]})
    # The streams live until the end: a full garbage collection traversing them all (130 ms of CPU
    # at 5,000 streams) would delay whatever this process records then, the floor's as the API's.
    gc.freeze()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if pubsub_task is not None:
        await pubsub_task
        with open(cfg["pubsub"]["records"], "w") as out:
            json.dump(pubsub_records, out)
    if record:
        with open(cfg["records"], "w") as out:
            json.dump(stats.records, out)
    _say({"done": True, "events": len(stats.records), "failed": stats.failed, "errors": stats.errors})


# ---------------------------------------------------------------------------- GET


async def run_get(cfg: dict[str, Any]) -> None:
    host, port = cfg["host"], cfg["port"]
    users = cfg["users"]
    rate = cfg.get("rate", 0)
    rng = random.Random(1)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(cfg["connections"]):
        pool.put_nowait(await asyncio.open_connection(host, port))
    started = time.perf_counter()
    measure_from = started + cfg.get("warmup_s", 1.0)
    end = measure_from + cfg["duration_s"]
    host_header = f"{host}:{port}"

    async def one(scheduled: float) -> None:
        reader, writer = await pool.get()
        try:
            writer.write(_request(cfg["path"].format(uid=rng.choice(users)), host_header, cfg.get("key")))
            status, headers = await _read_head(reader)
            await _read_body(reader, headers)
        finally:
            pool.put_nowait((reader, writer))
        done = time.perf_counter()
        if scheduled >= measure_from:
            latencies.append((done - scheduled) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

    if rate:
        interval = 1.0 / rate
        inflight: set[asyncio.Task] = set()
        i = 0
        max_late = 0.0
        while True:
            scheduled = started + i * interval
            if scheduled >= end:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                max_late = max(max_late, -delay)
            task = asyncio.create_task(one(scheduled))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            i += 1
        await asyncio.gather(*inflight)
        extra = {"scheduler_max_late_ms": round(max_late * 1000, 2)}
    else:
        async def loop() -> None:
            while True:
                now = time.perf_counter()
                if now >= end:
                    return
                await one(now)

        await asyncio.gather(*(loop() for _ in range(cfg["connections"])))
        extra = {}
    measured = len(latencies)
    _say({"done": True, "requests": measured, "seconds": cfg["duration_s"], "statuses": statuses,
          "latencies_ms": latencies, **extra})


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(sys.argv[1]) as source:
        cfg = json.load(source)
    asyncio.run(run_sse(cfg) if cfg["mode"] == "sse" else run_get(cfg))


if __name__ == "__main__":
    main()
