"""``make soak`` (``python -m tests.reliability.soak``): the whole pipeline under steady load for
a configurable time, with the projector killed (-9) and an API process restarted periodically.

Processes: a private redis-server, the MongoDB stand-in, the projector, two API processes and one
client process (SSE streams, one per user, and polling bots). This process writes to MongoDB
(:mod:`.workload`) and, once per period, prints a row: events applied, marks written, users
whose newest mark had not reached their stream ``GRACE_S`` after it was written (lost), p50/p99
write-to-client latency of the marks, bot answers, stream reconnects, kills and restarts, RSS and
open fds of every process, Redis memory and key count. At the end writes stop, every stream must
end on its user's last mark, the read model must equal the documents, and the slope check
(:mod:`.table`) must find nothing growing without bound; the exit status says whether it did.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import redis
from pymongo import MongoClient

from devkit.ports import free_port
from readmodel import Layout
from readmodel.health import read as read_health

from . import procs
from .table import Period, header, percentile, role, row, slope_failures
from .workload import Writer

GRACE_S = 20.0  # a kill -9 costs a projector start and a lease expiry (5 s): marks may be that late
PREFIX = "soak"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="make soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3600, help="how long writes run (default 3600)")
    p.add_argument("--period", type=float, help="seconds per table row (default 600, or a sixth of a short run)")
    p.add_argument("--rate", type=float, default=300, help="writes per second (default 300)")
    p.add_argument("--streams", type=int, default=1000, help="SSE clients, one user each (default 1000)")
    p.add_argument("--bots", type=int, default=10, help="polling bots (default 10, 2 GETs/s each)")
    p.add_argument("--kill-every", type=float, help="seconds between kill -9 of the projector (default period/2)")
    p.add_argument("--restart-every", type=float, help="seconds between API restarts (default period*0.7)")
    p.add_argument("--out", type=Path, help="directory for logs and the table (default a temporary one)")
    args = p.parse_args(argv)
    args.period = args.period or (600 if args.seconds >= 3600 else max(10.0, args.seconds / 6))
    args.kill_every = args.kill_every or args.period / 2
    args.restart_every = args.restart_every or args.period * 0.7
    return args


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = args.out or Path(tempfile.mkdtemp(prefix="soak-"))
        self.out.mkdir(parents=True, exist_ok=True)
        self.users = [f"soak-{i}" for i in range(args.streams)]
        self.layout = Layout(PREFIX)
        rport, mport = free_port(), free_port()
        self.redis_url = f"redis://127.0.0.1:{rport}/0"
        self.mongo_url = f"mongodb://127.0.0.1:{mport}/?directConnection=true"
        env = {"REDIS_URL": self.redis_url, "KEY_PREFIX": PREFIX, "MONGO_URL": self.mongo_url, "MONGO_DB": "app",
               "DEADLETTER_MAX": "200", "PYTHONUNBUFFERED": "1"}
        self.redis_proc = procs.redis_server(rport, self.out)
        self.standin = procs.standin(mport, self.out)
        self.projector = procs.projector(env, self.out)
        self.api_ports = [free_port(), free_port()]
        self.apis = [procs.api(n + 1, port, env, self.out) for n, port in enumerate(self.api_ports)]
        config = self.out / "clients.json"
        config.write_text(json.dumps({"users": self.users, "ports": self.api_ports, "key": procs.KEY, "bots": args.bots,
                                      "bot_interval_s": 0.5}))
        import subprocess
        self.clients = procs.Proc("clients", [sys.executable, "-m", "tests.reliability.soak.clients", str(config)], {},
                                  self.out, stdin=subprocess.PIPE)
        self.clients_stdout: Path = self.out / "clients.out"
        self.redis: redis.Redis | None = None
        self.mongo: MongoClient | None = None
        self.writer: Writer | None = None
        self.periods: list[Period] = []
        self.applied_seen = 0
        self.totals: dict[bytes, int] = {}  # projector process (holder) -> its last reported eventsTotal
        self.applied_period = 0
        self.events = {"kills": 0, "api_restarts": 0}
        self.peaks: dict[str, tuple[float, int]] = {}  # process -> highest (RSS MB, fds) sampled this period

    # ------------------------------------------------------------ processes

    def start(self) -> None:
        self.redis_proc.start()
        self.redis = redis.Redis.from_url(self.redis_url)
        procs.wait_until("redis answers", self.redis.ping, 10, self.redis_proc)
        self.standin.start()
        self.mongo = MongoClient(self.mongo_url, serverSelectionTimeoutMS=30_000)
        procs.wait_until("the stand-in answers", lambda: self.mongo.admin.command("ping"), 30, self.standin)
        self.writer = Writer(self.mongo, self.users, self.args.rate)
        self.writer.seed()
        self.projector.start()
        procs.wait_until("the projector tails", lambda: getattr(read_health(self.redis, self.layout), "state", "") == "tailing",
                         120, self.projector)
        for api, port in zip(self.apis, self.api_ports):
            api.start()
            procs.wait_until(f"{api.name} is up", lambda: procs.healthy(port), 30, api)
        with open(self.clients_stdout, "w") as answers:  # the child writes; we read through a handle of our own
            self.clients._popen["stdout"] = answers
            self.clients.start()
        self.clients_out = open(self.clients_stdout)
        procs.wait_until("every stream is open", lambda: self.ask("report")["open"] >= len(self.users), 120,
                         self.clients)

    def ask(self, command: str) -> dict:
        assert self.clients.proc is not None and self.clients.proc.stdin is not None
        self.clients.proc.stdin.write(f"{command}\n".encode())
        self.clients.proc.stdin.flush()
        deadline, line = time.monotonic() + 60, ""
        while time.monotonic() < deadline:
            line += self.clients_out.readline()  # a long answer may still be being written: wait for its end
            if line.endswith("\n"):
                message = json.loads(line)
                return message.get("report", message)
            time.sleep(0.05)
        raise RuntimeError("the client process did not answer")

    def all_procs(self) -> dict[str, procs.Proc]:
        named = {"redis": self.redis_proc, "standin": self.standin, "projector": self.projector,
                 "clients": self.clients}
        named.update({api.name: api for api in self.apis})
        return named

    def stop(self) -> None:
        if self.writer is not None:
            self.writer.stop.set()
        if self.clients.alive():
            try:
                self.ask("stop")
            except (RuntimeError, OSError, ValueError):
                pass
        for proc in [self.clients, *self.apis, self.projector, self.standin, self.redis_proc]:
            try:
                proc.stop()
            except Exception as exc:  # every other process must still be stopped
                print(f"soak: stopping {proc.name} failed: {exc}", file=sys.stderr)
        for client in (self.redis, self.mongo, getattr(self, "clients_out", None)):
            if client is not None:
                client.close()

    # ------------------------------------------------------------ faults

    def kill_projector(self) -> None:
        self.projector.kill9()
        self.events["kills"] += 1
        self.projector.start()

    def restart_api(self) -> None:
        n = self.events["api_restarts"] % len(self.apis)
        api, port = self.apis[n], self.api_ports[n]
        api.stop()
        api.start()
        self.events["api_restarts"] += 1
        procs.wait_until(f"{api.name} is back", lambda: procs.healthy(port), 60, api)

    # ------------------------------------------------------------ one period

    def applied(self) -> int:
        """Events applied since the last call, summed over projector processes (each counts from 0;
        the health hash names the process that wrote it). Polled often, so that a process killed
        within a period is counted up to its last report."""
        report = read_health(self.redis, self.layout)
        if report is not None and report.leader:
            self.totals[report.leader] = report.events_total
        now = sum(self.totals.values())
        delta, self.applied_seen = now - self.applied_seen, now
        return delta

    def sample(self) -> None:
        """Keep each process's highest RSS and fd count of the period (a process killed or restarted
        in the period is judged by what it reached, not by how young it is when the period ends)."""
        together = (0.0, 0)  # the API processes' sum at this sample: streams move between them
        for name, proc in self.all_procs().items():
            now = (proc.rss_mb(), proc.fds())
            rss, fds = self.peaks.get(name, (0.0, 0))
            self.peaks[name] = (max(rss, now[0]), max(fds, now[1]))
            if name != role(name) and role(name) == "api":
                together = (together[0] + now[0], together[1] + now[1])
        rss, fds = self.peaks.get("api", (0.0, 0))
        self.peaks["api"] = (max(rss, together[0]), max(fds, together[1]))
        self.applied_period += self.applied()

    def measure(self, index: int, seconds: float, marks_before: int) -> Period:
        report = self.ask("report")
        now_ns = time.monotonic_ns()
        expected = self.writer.last_before(now_ns - int(GRACE_S * 1e9))
        lost = sum(1 for uid, mark in expected.items() if report["max_exp"].get(uid, 0) < mark)
        latencies = sorted((ns - stamp) / 1e6 for uid, exp, ns in report["marks"]
                           if (stamp := self.writer.stamp_of(uid, exp)) is not None)
        self.writer.forget_before(now_ns - int(2 * self.args.period * 1e9))
        info = self.redis.info("memory")
        self.sample()
        period = Period(index, seconds, applied=self.applied_period, marks=sum(self.writer.last_mark.values()) - marks_before,
                        delivered=len(latencies), lost=lost, p50_ms=percentile(latencies, 50),
                        p99_ms=percentile(latencies, 99), bots=report["bots"], reconnects=report["reconnects"],
                        redis_mb=info["used_memory"] / 2**20, redis_keys=self.redis.dbsize())
        for name, (rss, fds) in self.peaks.items():
            period.rss_mb[name], period.fds[name] = rss, fds
        self.peaks, self.applied_period = {}, 0
        (self.out / f"period-{index + 1}.json").write_text(json.dumps(
            {"stream_errors": report["stream_errors"], "bot_errors": report["bot_errors"],
             "writer_errors": self.writer.errors}, indent=1))
        return period

    def run(self) -> int:
        args = self.args
        roles = list(self.all_procs())
        print(f"soak: {args.seconds:.0f} s, {args.rate:.0f} writes/s, {args.streams} streams, {args.bots} bots, "
              f"kill -9 every {args.kill_every:.0f} s, API restart every {args.restart_every:.0f} s; logs in {self.out}",
              flush=True)
        self.start()
        print(header(roles), flush=True)
        self.writer.start()
        started = time.monotonic()
        next_kill, next_restart = started + args.kill_every, started + args.restart_every
        period_start, marks_before, next_sample = started, 0, started
        while time.monotonic() - started < args.seconds:
            now = time.monotonic()
            if now >= next_sample:
                self.sample()
                next_sample = now + 5
            if now >= next_kill:
                self.sample()
                self.kill_projector()
                next_kill += args.kill_every
            if now >= next_restart:
                self.sample()
                self.restart_api()
                next_restart += args.restart_every
            if now - period_start >= args.period:
                self.finish_period(now - period_start, marks_before, roles)
                period_start, marks_before = now, sum(self.writer.last_mark.values())
            time.sleep(0.2)
        self.writer.stop.set()
        self.writer.join()
        if time.monotonic() - period_start >= args.period / 4:
            self.finish_period(time.monotonic() - period_start, marks_before, roles)
        return self.verdict()

    def finish_period(self, seconds: float, marks_before: int, roles: list[str]) -> None:
        period = self.measure(len(self.periods), seconds, marks_before)
        period.kills, period.api_restarts = self.events["kills"], self.events["api_restarts"]
        self.events = {"kills": 0, "api_restarts": 0}
        self.periods.append(period)
        print(row(period, roles), flush=True)

    def verdict(self) -> int:
        from .verdict import converge, read_model_diff

        problems = []
        behind = converge(self)
        if behind:
            problems.append(f"{len(behind)} users' streams never got their last mark: {behind[:5]}")
        diff = read_model_diff(self)
        if diff:
            problems.append(f"the read model differs from the documents: {diff}")
        bad = {k: v for p in self.periods for k, v in p.bots.items() if k not in ("200", "503")}
        if bad:
            problems.append(f"bots got answers other than 200/503: {bad}")
        if any(p.lost for p in self.periods):
            problems.append(f"marks late beyond {GRACE_S:.0f} s in periods "
                            f"{[p.index + 1 for p in self.periods if p.lost]}")
        problems += slope_failures(self.periods)
        summary = "\n".join(["", "soak: PASS" if not problems else "soak: FAIL", *problems])
        roles = list(self.all_procs())
        table = "\n".join([header(roles), *(row(p, roles) for p in self.periods)])
        (self.out / "table.md").write_text(table + "\n" + summary + "\n")
        print(summary, flush=True)
        return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    soak = Soak(parse(argv))
    try:
        return soak.run()
    finally:
        soak.stop()


if __name__ == "__main__":
    sys.exit(main())
