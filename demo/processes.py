"""Start and stop the demo's pieces: Redis, MongoDB stand-in, projector, API, simulator."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import redis
from pymongo import MongoClient

from devkit.ports import free_port, port_open
from devkit.processes import stop_process
from devkit.waits import wait_up
from readmodel import Layout, View, read_snapshot
from readmodel.health import read as read_health

from .simulator import DEMO_USERS, Simulator

LOCAL_REDIS = os.environ.get("DEMO_LOCAL_REDIS", "redis://127.0.0.1:6379/0")  # probed first
LOG_DIR = Path("demo-logs")
DB = "app"
PREFIX = "lsdemo"  # the demo's own keys, cleared at start; never the production prefix


def _percent(task: dict) -> str:
    if task["progressPercent"] is not None:
        return f"{round(task['progressPercent'])}%"
    return "estimating" if task["progressSource"] == "estimate" else task["status"]


class StartupError(RuntimeError):
    """A piece of the demo did not come up; the message says which and where to look."""


def wait_for(what: str, check: Callable[[], bool], process: subprocess.Popen | None = None, timeout: float = 30) -> None:
    def exited() -> str | None:
        if process is None or process.poll() is None:
            return None
        return f"{what} exited with code {process.returncode} while starting; see {LOG_DIR}/"

    wait_up(what, check, timeout, exited=exited, errors=(Exception,), error=StartupError)


class Stack:
    def __init__(self, api_port: int, mongo_port: int, redis_url: str | None, service_key: str,
                 auth_secret: str, speed: float) -> None:
        self.api_port = api_port or free_port()
        self.mongo_port = mongo_port or free_port()
        self.redis_url = redis_url
        self.service_key = service_key
        self.auth_secret = auth_secret
        self.speed = speed
        self.layout = Layout(PREFIX)
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.fake_server = None
        self.simulator: Simulator | None = None
        self.redis: redis.Redis | None = None

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/?directConnection=true"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "MONGO_URL": self.mongo_url, "MONGO_DB": DB, "REDIS_URL": self.redis_url or "",
                "KEY_PREFIX": PREFIX, "API_KEYS": self.service_key, "AUTH_SECRET": self.auth_secret, "PYTHONUNBUFFERED": "1"}

    def start(self, progress: Callable[[int, str], None]) -> None:
        progress(1, self._start_redis())
        stale = list(self.redis.scan_iter(match=f"{PREFIX}:*", count=1000))
        for start in range(0, len(stale), 500):
            self.redis.delete(*stale[start : start + 500])
        progress(2, "MongoDB stand-in (MockupDB speaking the real wire protocol; not a real MongoDB) …")
        self._spawn("stand-in", [sys.executable, "-m", "standin", "--port", str(self.mongo_port)])
        wait_for("the MongoDB stand-in", self._mongo_answers, self.processes[-1][1])
        progress(2, f"MongoDB stand-in up at {self.mongo_url}")
        progress(3, "projector: initial sync, then tailing the change stream …")
        self._spawn("projector", [sys.executable, "-m", "projector", "run"])
        wait_for("the projector", self._projector_alive, self.processes[-1][1], timeout=60)
        progress(3, "projector tailing")
        if port_open(self.api_port):
            raise StartupError(f"port {self.api_port} is taken; pass --api-port")
        progress(4, f"API on {self.api_url} …")
        self._spawn("api", [sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(self.api_port)])
        wait_for("the API", lambda: urllib.request.urlopen(f"{self.api_url}/healthz", timeout=1).status == 200,
                 self.processes[-1][1])
        progress(5, "traffic simulator: task lifecycles and balance changes for "
                    f"{len(DEMO_USERS)} users …")
        self.simulator = Simulator(self.mongo_url, DB, speed=self.speed)
        self.simulator.start()
        progress(6, "running")

    def _start_redis(self) -> str:
        if self.redis_url is None:
            probe = redis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=0.5)
            try:
                probe.ping()
                self.redis_url = LOCAL_REDIS
            except redis.ConnectionError:
                pass
            finally:
                probe.close()
            if self.redis_url is None:
                from fakeredis import TcpFakeServer

                port = free_port()
                self.fake_server = TcpFakeServer(("127.0.0.1", port), server_version=(7, 0))
                threading.Thread(target=self.fake_server.serve_forever, daemon=True).start()
                self.redis_url = f"redis://127.0.0.1:{port}/0"
                self.redis = redis.Redis.from_url(self.redis_url)
                return f"Redis: none answered on 127.0.0.1:6379; started an embedded one (fakeredis) at {self.redis_url}"
        self.redis = redis.Redis.from_url(self.redis_url)
        self.redis.ping()
        return f"Redis: using the one at {self.redis_url}"

    def _mongo_answers(self) -> bool:
        client = MongoClient(self.mongo_url, serverSelectionTimeoutMS=500)
        try:
            return client.admin.command("ping")["ok"] == 1
        finally:
            client.close()

    def _projector_alive(self) -> bool:
        report = read_health(self.redis, self.layout)
        return report is not None and report.heartbeat_ms > 0

    def _spawn(self, name: str, argv: list[str]) -> None:
        LOG_DIR.mkdir(exist_ok=True)
        log = open(LOG_DIR / f"{name}.log", "w")
        process = subprocess.Popen(argv, env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.processes.append((name, process))

    def token(self, user: str) -> str:
        result = subprocess.run([sys.executable, "-m", "api", "token", user, "--ttl", "86400"], env=self.env(),
                                capture_output=True, text=True, timeout=30, check=True)
        return result.stdout.strip()

    def print_urls(self, user: str) -> None:
        token = self.token(user)
        print(f"""
livestatus demo is running (Ctrl-C stops everything; process logs in {LOG_DIR}/).
  web panel   {self.api_url}/panel#user={user}&token={token}
  snapshot    curl -H 'Authorization: Bearer {self.service_key}' {self.api_url}/users/{user}/status
  stream      curl -N -H 'Authorization: Bearer {self.service_key}' {self.api_url}/users/{user}/status/stream
  bot text    curl -H 'Authorization: Bearer {self.service_key}' '{self.api_url}/users/{user}/status/text?platform=telegram'
  API docs    {self.api_url}/docs
  ops         MONGO_URL='{self.mongo_url}' MONGO_DB={DB} REDIS_URL={self.redis_url} KEY_PREFIX={PREFIX} .venv/bin/projector status
  redis       redis-cli -u {self.redis_url} HGETALL '{self.layout.user(user)}'
""", flush=True)

    def summary(self, user: str) -> str:
        now_ms = int(time.time() * 1000)
        live = 0
        for uid in DEMO_USERS:
            snap = read_snapshot(self.redis, self.layout, uid, View(now_ms))
            live += len(snap["liveTasks"]) + snap["liveTasksOmitted"]
        mine = read_snapshot(self.redis, self.layout, user, View(now_ms))
        report = read_health(self.redis, self.layout)
        counters = self.simulator.counters if self.simulator else None
        bars = " ".join(f"[{(t['toolId'] or '?')[:9]} {_percent(t)}]" for t in mine["liveTasks"][:3])
        return (
            f"{time.strftime('%H:%M:%S')} live tasks {live:2d} · tasks started {counters.tasks_started} "
            f"finished {counters.tasks_finished} · lag {report.lag_ms if report else '?'} ms · "
            f"{user}: ${mine['balance']['usdCredit']} / {mine['balance']['points']} pts v{mine['version']} {bars}"
        )

    def stop(self) -> None:
        if self.simulator is not None:
            self.simulator.stop()
        # One at a time, readers first: the projector checkpoints while the stand-in still answers.
        for name, process in reversed(self.processes):
            if stop_process(process, 10):
                print(f"{name} did not stop on SIGTERM; it was killed", file=sys.stderr)
        if self.redis is not None:
            self.redis.close()
        if self.fake_server is not None:
            self.fake_server.shutdown()
            self.fake_server.server_close()
