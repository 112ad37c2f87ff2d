"""The worker's scheduled verify, and repairs asked for by ``projector verify --repair``.

While a worker leads, :meth:`VerifySchedule.tick` (called by its loop about once a second) starts a
sampled verify every ``VERIFY_EVERY_S`` seconds (``0``: never) over ``VERIFY_SAMPLE`` users (a
count, or a fraction below 1), and runs the requests the CLI queues when it finds drift while a
leader runs. Drift is repaired (``VERIFY_REPAIR``, default on) through the worker's own writer:
the verify thread plans the repair, hands it over, and the worker thread submits it behind the
batches in flight, where it runs only while the lease holds (:mod:`.verify_repair`).

Ownership: the ``verify`` thread owns the :class:`Verifier`, the plan and :class:`Counts` (it swaps
in a new immutable copy after each run, which the metrics collector reads at scrape time); the
worker thread owns the thread handle and the due time; the queue of plans is the only hand-off.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from readmodel import Layout

from .settings import SettingsError
from .verify import Report, Verifier, VerifyError
from .verify_compare import KINDS
from .verify_repair import repair

log = logging.getLogger(__name__)

PREFIX = "livestatus_projector_verify_"
RESULT_TTL_S = 600
REPAIR_WAIT_S = 60.0


def request_key(layout: Layout) -> str:
    """List of verify-and-repair requests for the leader (JSON: id, users)."""
    return layout.checkpoint.rsplit(":", 1)[0] + ":verify:requests"


def result_key(layout: Layout, request_id: str) -> str:
    return layout.checkpoint.rsplit(":", 1)[0] + f":verify:result:{request_id}"


def parse_sample(raw: str) -> float:
    """A count of users (``100``) or a fraction of them (``0.05``); ValueError otherwise."""
    value = float(raw)
    if not (0 < value < 1 or (value >= 1 and value == int(value))):
        raise ValueError(f"a sample is a whole number of users or a fraction between 0 and 1, got {raw!r}")
    return value


@dataclass(frozen=True)
class Config:
    every_s: float = 600.0  # 0: no scheduled verify
    sample: float = 100
    repair: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        try:
            every = float(env.get("VERIFY_EVERY_S", cls.every_s))
            sample = parse_sample(env.get("VERIFY_SAMPLE", str(cls.sample)))
        except ValueError as exc:
            raise SettingsError(f"VERIFY_EVERY_S / VERIFY_SAMPLE: {exc}") from None
        if not 0 <= every < 1e9:
            raise SettingsError(f"VERIFY_EVERY_S must be 0 (off) or a number of seconds, got {every}")
        repair = env.get("VERIFY_REPAIR", "1").strip().lower() not in ("0", "no", "false", "off")
        return cls(every, sample, repair)


@dataclass(frozen=True)
class Counts:
    runs: int = 0
    failures: int = 0
    users: int = 0
    unsettled: int = 0
    drift: Mapping[str, int] = field(default_factory=dict)
    repaired: Mapping[str, int] = field(default_factory=dict)
    last_run_ms: int = 0


class Collector:
    """The counters as Prometheus families (registered on the worker's metrics registry)."""

    def __init__(self, schedule: VerifySchedule) -> None:
        self.schedule = schedule

    def collect(self) -> Iterator[Metric]:
        c = self.schedule.counts
        yield CounterMetricFamily(PREFIX + "runs", "verifies run by this process", value=c.runs)
        yield CounterMetricFamily(PREFIX + "failures", "verifies that could not compare", value=c.failures)
        yield CounterMetricFamily(PREFIX + "users", "users compared", value=c.users)
        yield CounterMetricFamily(PREFIX + "unsettled", "users written to during every round (not judged)",
                                  value=c.unsettled)
        for name, counts, doc in (("drift", c.drift, "differences found, by kind"),
                                  ("repaired", c.repaired, "differences repaired, by kind")):
            family = CounterMetricFamily(PREFIX + name, doc, labels=["kind"])
            for kind in KINDS:
                family.add_metric([kind], counts.get(kind, 0))
            yield family
        if c.last_run_ms:
            yield GaugeMetricFamily(PREFIX + "last_run_timestamp_seconds", "when the last verify finished",
                                    value=c.last_run_ms / 1000)


def _request(raw: Any) -> dict | None:
    """A queued request ``{"id": str, "users": [str]}``; None (logged) when it is not one."""
    try:
        request = json.loads(raw)
        if (isinstance(request, dict) and isinstance(request.get("id"), str) and request["id"].isalnum()
                and isinstance(request.get("users"), list) and all(isinstance(u, str) for u in request["users"])):
            return request
    except ValueError:
        pass
    log.warning("ignoring a malformed verify request: %r", raw[:200])
    return None


class VerifySchedule:
    """One worker's scheduled verifies and requested repairs."""

    def __init__(self, worker: Any, config: Config | None = None) -> None:
        self.worker = worker
        self.config = config or Config.from_env()
        self.counts = Counts()
        self.plans: queue.Queue[tuple[Any, threading.Event, list[Any]]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._due = worker.monotonic() + self.config.every_s
        self._registered = False
        self._stop = threading.Event()

    def tick(self) -> None:
        """Worker thread, while leading: hand over plans, start a verify when one is due or asked for."""
        if not self._registered and self.worker.metrics is not None:
            self.worker.metrics.registry.register(Collector(self))
            self._registered = True
        while True:
            try:
                job = self.plans.get_nowait()
            except queue.Empty:
                break
            self.worker.writes.submit(self._writer_job(*job))
        if self._thread is not None and self._thread.is_alive():
            return
        request = None
        while request is None and (raw := self.worker.redis.rpop(request_key(self.worker.layout))) is not None:
            request = _request(raw)
        if request is not None:
            self._start(request=request)
        elif self.config.every_s and self.worker.monotonic() >= self._due:
            self._due = self.worker.monotonic() + self.config.every_s
            self._start(request=None)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _start(self, request: dict | None) -> None:
        self._thread = threading.Thread(target=self._run, args=(request,), name="verify", daemon=True)
        self._thread.start()

    def _writer_job(self, plan: Any, done: threading.Event, outcome: list[Any]):
        token = self.worker.lease.token  # captured on the worker's thread, checked by the scripts

        def job() -> None:  # the writer thread; never raises, so the worker's batches go on
            def fenced() -> None:
                if not self.worker.lease.held():
                    raise VerifyError("the lease was lost before the repair was written")
            try:
                outcome.append(plan.apply(self.worker.redis, fenced, self.worker.clock, token))
            except Exception as exc:  # reported by the verify thread
                outcome.append(exc)
            finally:
                done.set()
        return job

    def _run(self, request: dict | None) -> None:
        """The verify thread: one verify (and repair), then the counters."""
        worker = self.worker
        verifier = Verifier(worker.settings, worker.redis, worker.source.client)
        repair = self.config.repair if request is None else True
        result: dict[str, Any] = {}
        repaired: dict[str, int] = {}
        report = Report()
        try:
            users = request["users"] if request else verifier.sample(self.config.sample)
            report = verifier.check(users)
            result = report.as_json()
            if report.drift and repair and not self._stop.is_set():
                repaired = self._repair(verifier, report)
                result["repaired"] = sum(repaired.values())
                result["remaining"] = len(report.drift) - result["repaired"]
            if report.drift:
                log.warning("verify: %d differences in %d of %d users%s: %s", len(report.drift),
                            len(report.drift_users), report.users, " (repaired)" if repaired else "",
                            "; ".join(d.line() for d in report.drift[:5]))
        except Exception as exc:
            log.warning("verify failed: %s: %s", type(exc).__name__, exc)
            result = {"error": f"{type(exc).__name__}: {exc}"}
        c = self.counts
        drift = dict(c.drift)
        for d in report.drift:
            drift[d.kind] = drift.get(d.kind, 0) + 1
        self.counts = replace(
            c, runs=c.runs + 1, failures=c.failures + ("error" in result), users=c.users + report.users,
            unsettled=c.unsettled + len(report.unsettled), drift=drift,
            repaired={k: c.repaired.get(k, 0) + repaired.get(k, 0) for k in set(c.repaired) | set(repaired)},
            last_run_ms=int(worker.clock() * 1000))
        if request:
            worker.redis.set(result_key(worker.layout, request["id"]), json.dumps(result), ex=RESULT_TTL_S)

    def _repair(self, verifier: Verifier, report: Report) -> dict[str, int]:
        def write(plan: Any) -> None:  # through the worker thread, onto its writer
            done = threading.Event()
            outcome: list[Any] = []
            self.plans.put((plan, done, outcome))
            deadline = time.monotonic() + REPAIR_WAIT_S
            while not done.wait(0.1) and time.monotonic() < deadline and not self._stop.is_set():
                pass
            if not outcome or isinstance(outcome[0], Exception):
                raise VerifyError(f"the repair was not written: {outcome[0] if outcome else 'timed out'}")

        _documents, after = repair(verifier, report, write)
        left = {(d.kind, d.user, d.doc) for d in after.drift}
        kinds: dict[str, int] = {}
        for d in report.drift:
            if (d.kind, d.user, d.doc) not in left:
                kinds[d.kind] = kinds.get(d.kind, 0) + 1
        return kinds
