"""Helpers for the API tests: read-model writes, a real uvicorn subprocess, an SSE line reader."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from devkit.ports import free_port
from readmodel import FINISHED, GONE, LIVE, BalanceChange, ReadModel, TaskChange
from readmodel.records import balance_record, finished_task_record, live_task_record

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-" + "x" * 40
KEY = "bot-key-" + "0123456789abcdef" * 2
_seq = [0]


def next_seq() -> str:
    _seq[0] += 1
    return f"{int(time.time()):010d}.{_seq[0]:010d}"


def iso_ms(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def task_change(
    owner: str,
    generation_id: str,
    status: str = "processing",
    progress: float | None = 47.0,
    source: str | None = "reported",
    tool: str = "flux",
    tool_name: str | None = "FLUX Schnell",
    cost: str | None = "0.012469",
    started_ms: int | None = None,
    expected_ms: int | None = None,
    live: bool = True,
    updated_ms: int | None = None,
) -> TaskChange:
    started_ms = started_ms if started_ms is not None else int(time.time() * 1000) - 5000
    visible = {
        "generationId": generation_id,
        "idHash": hashlib.sha256(generation_id.encode()).hexdigest()[:5],
        "status": status,
        "progressPercent": progress,
        "progressSource": source if progress is not None else None,
        "toolId": tool,
        "toolDisplayName": tool_name,
        "costUsd": cost,
        "startedAt": iso_ms(started_ms),
        "updatedAt": iso_ms(updated_ms if updated_ms is not None else started_ms),
        "sourcePlatform": "telegram",
    }
    if not live:
        return TaskChange(generation_id, next_seq(), owner, FINISHED, finished_task_record(visible, started_ms))
    stale_at = started_ms + 24 * 3600 * 1000
    return TaskChange(generation_id, next_seq(), owner, LIVE, live_task_record(visible, expected_ms, stale_at), stale_at)


def gone_change(owner: str, generation_id: str) -> TaskChange:
    return TaskChange(generation_id, next_seq(), owner, GONE)


def balance_change(owner: str, usd: str = "1.250000", points: int = 3378, exp: int = 42) -> BalanceChange:
    return BalanceChange(f"econ-{owner}", next_seq(), owner, balance_record(usd, points, exp))


def apply(readmodel: ReadModel, *changes: Any) -> dict[str, int]:
    return readmodel.apply(list(changes), iso_ms(int(time.time() * 1000)))


@dataclass
class Server:
    """``python -m api`` in a subprocess on a loopback port."""

    prefix: str
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None
    stderr: str = ""
    log_level: str = "warning"
    log_path: Path | None = None  # stdout and stderr both go there (stderr is then not kept)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> Server:
        """Start and wait for /healthz. A process that exits or does not come up is stopped, its
        stderr pipe read and closed, before the error is raised: a failed start leaks nothing."""
        self.port = self.port or free_port()
        env = {
            **os.environ,
            "KEY_PREFIX": self.prefix,
            "API_KEYS": KEY,
            "AUTH_SECRET": SECRET,
            "SSE_HEARTBEAT_S": "0.3",
            "SSE_RETRY_MS": "200",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        log = open(self.log_path, "a") if self.log_path else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", self.log_level],
            cwd=ROOT,
            env=env,
            stdout=log or subprocess.DEVNULL,
            stderr=log or subprocess.PIPE,
        )
        if log:
            log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._close_stderr()
                raise RuntimeError(f"api exited: {self.log_path.read_text() if self.log_path else self.stderr}")
            try:
                if httpx.get(self.url + "/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        self._close_stderr()
        raise RuntimeError(f"api did not come up in {timeout_s} s: {self.stderr[-2000:]}")

    def _close_stderr(self) -> None:
        if self.proc is not None and self.proc.stderr is not None and not self.proc.stderr.closed:
            self.stderr = self.proc.stderr.read().decode(errors="replace")
            self.proc.stderr.close()

    def stop(self, timeout_s: float = 10) -> float:
        """SIGTERM, wait; returns how long the exit took (0 if it had exited: its stderr is kept all the same)."""
        if self.proc is None:
            return 0.0
        started = time.monotonic()
        try:
            if self.proc.poll() is not None:
                return 0.0
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        finally:
            self._close_stderr()
        return time.monotonic() - started

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=5).text
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0


def auth(token: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Event:
    event: str | None = None
    id: str | None = None
    data: str = ""
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class SSE:
    """Reads a text/event-stream response line by line (heartbeats keep reads short)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines: Iterator[str] = response.iter_lines()
        self.comments: list[str] = []

    def next(self, timeout_s: float = 5.0, kinds: tuple[str, ...] = ("snapshot", "sync")) -> Event:
        deadline = time.monotonic() + timeout_s
        current = Event()
        started = False
        for line in self.lines:
            if line == "":
                if started and (current.event in kinds):
                    return current
                current, started = Event(), False
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                started = True
                if name == "data":
                    current.data = current.data + "\n" + value if current.data else value
                elif name == "retry":
                    current.retry = int(value)
                else:
                    setattr(current, name, value)
            if time.monotonic() > deadline:
                break
        raise TimeoutError(f"no {kinds} event within {timeout_s}s")

    def snapshot(self, timeout_s: float = 5.0) -> Event:
        return self.next(timeout_s, kinds=("snapshot",))
