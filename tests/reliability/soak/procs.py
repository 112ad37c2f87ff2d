"""The processes a soak runs, each stopped by its own pid: a private redis-server, the MongoDB
stand-in, the projector, API processes and the client process. Logs go to the run's directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from devkit.ports import real_clock_env
from devkit.processes import stop_process
from devkit.waits import wait_up

ROOT = Path(__file__).resolve().parents[3]
KEY = "soak-service-key-" + "0123456789abcdef" * 2
SECRET = "soak-secret-" + "fedcba9876543210" * 2


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 60, proc: Proc | None = None) -> None:
    def exited() -> str | None:
        if proc is None or proc.alive():
            return None
        return f"{what}: {proc.name} exited; its log is {proc.log_path}"

    wait_up(what, check, timeout_s, exited=exited, errors=(OSError, redis.RedisError), error=RuntimeError)


class Proc:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], logs: Path, base_env: dict | None = None,
                 **popen) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.base_env = os.environ if base_env is None else base_env
        self.log_path = logs / f"{name}.log"
        self.starts = 0
        self.proc: subprocess.Popen | None = None
        self._popen = popen

    def start(self) -> Proc:
        self.starts += 1
        with open(self.log_path, "a") as log:
            log.write(f"---- start {self.starts} at {time.strftime('%H:%M:%S')}\n")
            log.flush()
            options = {"stdout": log, "stderr": subprocess.STDOUT, **self._popen}
            self.proc = subprocess.Popen(self.argv, env={**self.base_env, **self.env}, cwd=ROOT, **options)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout_s: float = 20) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s)
            for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()

    def rss_mb(self) -> float:
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return 0


def redis_server(port: int, logs: Path) -> Proc:
    return Proc("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                          "no", "--dir", str(logs)], {}, logs, base_env=real_clock_env())  # not ours: real clock


def standin(port: int, logs: Path) -> Proc:
    # A capped oplog, as a real one is (100k changes: minutes of history at the soak's rates).
    return Proc("standin", [sys.executable, "-m", "standin", "--host", "127.0.0.1", "--port", str(port),
                            "--oplog-limit", "100000"], {}, logs)


def projector(env: dict[str, str], logs: Path) -> Proc:
    return Proc("projector", [sys.executable, "-m", "projector", "run", "--no-progress"], env, logs)


def api(n: int, port: int, env: dict[str, str], logs: Path) -> Proc:
    return Proc(f"api-{n}", [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "warning"],
                {**env, "API_KEYS": KEY, "AUTH_SECRET": SECRET, "STREAMS_PER_SERVICE_KEY": "1000000",
                 "STREAMS_PER_USER": "1000"}, logs)


def healthy(port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
