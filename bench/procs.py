"""Processes a benchmark starts: the API (or the bare baseline app) under uvicorn, and load clients.

Everything listens and connects on loopback only. Each process started here is stopped here, by
its own pid.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devkit.ports import free_port
from devkit.processes import stop_process  # the benchmarks import it from here

from .common import REDIS_URL, rss_kb

HOST = "127.0.0.1"
SERVICE_KEY = "bench-service-key-" + "0123456789abcdef" * 2  # the API wants 32+ characters
LOGS = Path(__file__).parent / "results" / "logs"
# Where the servers' code is imported from: this checkout, or (for before/after experiments) a
# patched copy of it named by BENCH_APP_ROOT.
APP_ROOT = Path(os.environ.get("BENCH_APP_ROOT") or Path(__file__).parent.parent)


def api_available() -> str | None:
    """None when the API can be started, else why not."""
    try:
        import api.__main__
        import api.main  # noqa: F401
    except Exception as exc:  # ImportError, or a half-written module
        return f"the API is not importable yet ({exc.__class__.__name__}: {exc})"
    return None


class Server:
    """A uvicorn process serving the API (``kind="api"``) or the bare baseline (``"bare"``)."""

    def __init__(self, kind: str, prefix: str, extra_env: dict[str, str] | None = None,
                 root: Path | None = None, python: str | None = None) -> None:
        """``root``: the checkout whose code the server runs (default ``APP_ROOT``); ``python``: the
        interpreter (default this one; another venv compares dependency versions)."""
        self.kind = kind
        self.port = free_port()
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{kind}-{self.port}.log"
        root = root or APP_ROOT
        env = {
            **os.environ,
            "REDIS_URL": REDIS_URL,
            "KEY_PREFIX": prefix,
            "API_KEYS": SERVICE_KEY,
            "AUTH_SECRET": secrets.token_hex(32),
            "PYTHONUNBUFFERED": "1",
            # The capacity benchmark holds tens of thousands of streams with one key.
            "STREAMS_PER_SERVICE_KEY": "1000000",
            "STREAMS_PER_PROCESS": "1000000",
            **(extra_env or {}),
        }
        python = python or sys.executable
        if kind == "api":
            # warning: no access-log line per request (the bare baseline has none either)
            command = [python, "-m", "api", "--host", HOST, "--port", str(self.port), "--log-level", "warning"]
        else:
            command = [python, "-m", "bench.bare", "--host", HOST, "--port", str(self.port)]
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=root)
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        path = "/healthz"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.proc.returncode}: {self.tail_log()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as sock:
                    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.kind} server did not become ready in {timeout_s}s: {self.tail_log()}")

    def tail_log(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text().strip().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Client:
    """A ``bench.loadgen`` process; talk to it with :meth:`wait_for` and :meth:`finish`."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config_file = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="loadgen-", delete=False)
        json.dump(config, self._config_file)
        self._config_file.close()
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.loadgen", self._config_file.name],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=Path(__file__).parent.parent)

    def wait_for(self, key: str, timeout_s: float = 300.0) -> dict[str, Any]:
        """The next JSON line that has ``key`` (lines are read as they come)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"load client exited with {self.proc.wait()}")
            message = json.loads(line)
            if key in message:
                return message
        raise TimeoutError(f"load client said no {key!r} within {timeout_s}s")

    def finish(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Tell an SSE client to stop and return its final report."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        return self.wait_for("done", timeout_s)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        os.unlink(self._config_file.name)


class StandInProcess:
    """The MongoDB stand-in as its own process (``python -m standin``) on a free loopback port;
    as a context manager, stopped (by its pid) on the way out."""

    def __init__(self) -> None:
        self.port = free_port()
        LOGS.mkdir(parents=True, exist_ok=True)
        self._log = open(LOGS / f"standin-{self.port}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "standin", "--host", HOST, "--port", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent)
        self.url = f"mongodb://{HOST}:{self.port}/?directConnection=true"

    def client(self) -> Any:
        """A pymongo client of the stand-in, once it answers (the first ping waits up to 30 s)."""
        from pymongo import MongoClient

        client: Any = MongoClient(self.url, serverSelectionTimeoutMS=30_000)
        client.admin.command("ping")
        return client

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()

    def __enter__(self) -> StandInProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
