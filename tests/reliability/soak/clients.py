"""The soak's clients, one process: ``python -m tests.reliability.soak.clients CONFIG.json``.

One SSE stream per user (as a panel's EventSource: on any end or error it waits a moment and
reconnects with ``Last-Event-ID``, to the next API process in the list) and a few polling bots
(``GET /users/{id}/status`` on a keep-alive connection, moving to the next API process when one
goes away). Each stream records the first time it saw each value of the user's balance ``exp``,
which the soak's writer sets to an increasing number per user (the mark of a write).

Commands on stdin, one JSON line answered on stdout each: ``report`` (what was seen since the
last report, then forgotten) and ``stop``. Everything here is owned by the one asyncio loop.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import resource
import sys
import time
from typing import Any

EXP = re.compile(rb'"exp":(\d+)')


class Seen:
    def __init__(self) -> None:
        self.marks: list[tuple[str, int, int]] = []  # (user, exp, monotonic ns), first sight only
        self.max_exp: dict[str, int] = {}
        self.open = 0
        self.reconnects = 0
        self.stream_errors: dict[str, int] = {}
        self.bots: dict[str, int] = {}
        self.bot_errors: dict[str, int] = {}

    def mark(self, uid: str, exp: int, ns: int) -> None:
        if exp > self.max_exp.get(uid, -1):
            self.max_exp[uid] = exp
            self.marks.append((uid, exp, ns))

    def report(self) -> dict[str, Any]:
        out = {"marks": self.marks, "max_exp": self.max_exp, "open": self.open, "reconnects": self.reconnects,
               "stream_errors": self.stream_errors, "bots": self.bots, "bot_errors": self.bot_errors}
        self.marks, self.stream_errors, self.bots, self.bot_errors = [], {}, {}, {}
        self.reconnects = 0
        return out


def _count(table: dict[str, int], key: str) -> None:
    table[key] = table.get(key, 0) + 1


def _request(path: str, port: int, key: str, accept: str, last_id: str | None = None) -> bytes:
    resume = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Accept: {accept}\r\n{resume}\r\n").encode()


async def _head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ", 2)[1]), headers


async def _read_stream(reader: asyncio.StreamReader, uid: str, seen: Seen, state: dict) -> None:
    buffer = b""
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return
        buffer += data[:-2]
        now = time.monotonic_ns()
        *messages, buffer = buffer.replace(b"\r\n", b"\n").split(b"\n\n")
        for message in messages:
            for line in message.split(b"\n"):
                if line.startswith(b"id:"):
                    state["last_id"] = line[3:].strip().decode()
                elif line.startswith(b"data:"):
                    found = EXP.search(line)
                    if found:
                        seen.mark(uid, int(found.group(1)), now)


async def stream(cfg: dict, index: int, uid: str, seen: Seen, stop: asyncio.Event) -> None:
    ports, state, attempt = cfg["ports"], {"last_id": None}, index
    rng = random.Random(index)
    while not stop.is_set():
        port = ports[attempt % len(ports)]
        writer = None
        counted = False
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, limit=1 << 20), 10)
            writer.write(_request(f"/users/{uid}/status/stream", port, cfg["key"], "text/event-stream",
                                  state["last_id"]))
            status, _ = await asyncio.wait_for(_head(reader), 60)  # EventSource waits for headers without limit
            if status != 200:
                raise RuntimeError(f"HTTP {status}")
            seen.open += 1
            counted = True
            await _read_stream(reader, uid, seen, state)
            _count(seen.stream_errors, "ended")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure is a reconnect, counted by kind
            _count(seen.stream_errors, f"{type(exc).__name__}: {exc}"[:80])
        finally:
            if counted:
                seen.open -= 1
            if writer is not None:
                writer.close()
        if stop.is_set():
            return
        seen.reconnects += 1
        attempt += 1
        # EventSource waits the server's `retry:` (SSE_RETRY_MS, 2 s) before reconnecting; jitter as
        # many browsers add. (The first hour-long run retried after 0.2-1 s and gave up on headers after
        # 10 s: on an overloaded machine that alone multiplied the reconnections.)
        await asyncio.sleep(2.0 + rng.uniform(0.0, 1.0))


async def bot(cfg: dict, index: int, users: list[str], seen: Seen, stop: asyncio.Event) -> None:
    ports, attempt, rng = cfg["ports"], index, random.Random(-index - 1)
    while not stop.is_set():
        port = ports[attempt % len(ports)]
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            while not stop.is_set():
                writer.write(_request(f"/users/{rng.choice(users)}/status", port, cfg["key"], "application/json"))
                status, headers = await asyncio.wait_for(_head(reader), 10)
                await reader.readexactly(int(headers.get("content-length", "0")))
                _count(seen.bots, str(status))
                await asyncio.sleep(cfg["bot_interval_s"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a refused or dropped connection: the next API process
            _count(seen.bot_errors, f"{type(exc).__name__}: {exc}"[:80])
        finally:
            if writer is not None:
                writer.close()
        attempt += 1
        await asyncio.sleep(0.2)


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def main(cfg: dict) -> None:
    seen, stop = Seen(), asyncio.Event()
    users = cfg["users"]
    tasks = [asyncio.create_task(stream(cfg, i, uid, seen, stop)) for i, uid in enumerate(users)]
    tasks += [asyncio.create_task(bot(cfg, i, users, seen, stop)) for i in range(cfg["bots"])]
    loop = asyncio.get_running_loop()
    while True:
        command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if command == "report":
            _say({"report": seen.report()})
        elif command in ("stop", ""):
            break
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    _say({"done": True})


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(sys.argv[1]) as source:
        asyncio.run(main(json.load(source)))
