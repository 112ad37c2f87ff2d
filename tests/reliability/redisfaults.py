"""What the Redis fault tests watch from outside: a polling bot, an SSE client, a process's CPU."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.apiserver import auth


@dataclass
class Answer:
    phase: str
    status: int | str  # an HTTP status, or the client-side error's name (a hang ends as ReadTimeout)
    seconds: float
    retry_after: str | None = None
    code: str | None = None


@dataclass(eq=False)
class Bot(threading.Thread):
    """GET /users/{uid}/status in a loop; every answer recorded with the phase it was sent in."""

    url: str
    uid: str
    phase: str = "pass"
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    client_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, name="bot", daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=self.client_timeout_s) as client:
            while not self.stop.is_set():
                phase, started = self.phase, time.monotonic()
                try:
                    r = client.get(f"{self.url}/users/{self.uid}/status", headers=auth())
                    code = r.text[:200] if r.status_code != 200 else None
                    self.answers.append(Answer(phase, r.status_code, time.monotonic() - started,
                                               r.headers.get("retry-after"), code))
                except httpx.HTTPError as exc:
                    self.answers.append(Answer(phase, type(exc).__name__, time.monotonic() - started))
                self.stop.wait(0.1)


@dataclass(eq=False)
class Listener(threading.Thread):
    """One SSE stream: the versions it received, and how it ended (if it did)."""

    url: str
    uid: str
    versions: list[int] = field(default_factory=list)
    comments: int = 0
    ended: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread.__init__(self, name="listener", daemon=True)

    def run(self) -> None:
        try:
            timeout = httpx.Timeout(5.0, read=10.0)  # heartbeats every 0.3 s keep reads short
            with httpx.stream("GET", f"{self.url}/users/{self.uid}/status/stream", headers=auth(),
                              timeout=timeout) as response:
                if response.status_code != 200:
                    self.ended = f"HTTP {response.status_code}"
                    return
                for line in response.iter_lines():
                    if self.stop.is_set():
                        return
                    if line.startswith(":"):
                        self.comments += 1
                    elif line.startswith("id:"):
                        self.versions.append(int(line[3:].strip()))
            if not self.stop.is_set():  # not the API stopped by the test's teardown after stop()
                self.ended = "the server ended the stream"
        except httpx.HTTPError as exc:
            if not self.stop.is_set():
                self.ended = f"{type(exc).__name__}: {exc}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
