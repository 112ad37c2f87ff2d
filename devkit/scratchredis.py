"""A redis-server of a test's own on a free loopback port, without persistence: one it may flush,
kill and restart (never the shared Redis at 6379)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis

from devkit.ports import free_port, real_clock_env
from devkit.waits import wait_up


class PrivateRedis:
    """A redis-server of this test's own (no persistence), so it may be flushed and restarted."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=real_clock_env(),
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            wait_up(f"the private redis-server on port {self.port}", client.ping, 10, errors=(redis.ConnectionError,),
                    error=RuntimeError, interval_s=0.05)
        except RuntimeError:
            self.kill()
            raise
        finally:
            client.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
