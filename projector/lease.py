"""Leader lease: one applying worker per Redis, with a fencing token per acquisition.

An acquisition is acknowledged by a replica (``WAIT``) and its token copied into every slot
(:mod:`readmodel.fences`) before the process leads: the scripts that write the read model then
refuse the previous leader everywhere, even when a failover lost the lease key. See
docs/two-writers.md for what this guarantees and what it does not.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from enum import Enum
from functools import partial
from typing import Any

from readmodel import Layout, scripts
from readmodel.fences import Fences, NotReplicated
from readmodel.text import text

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another process holds the lease now: stop applying."""


class Hold(Enum):
    """What :meth:`Lease.hold` found."""

    KEPT = "kept"  # leading, as before
    ACQUIRED = "acquired"  # leading from now on (a new fencing token)
    TAKEN_OVER = "taken over"  # was leading; another process holds it now
    STANDBY = "standby"  # another process leads


def holder_id() -> str:
    """host:pid:random, unique per process start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Lease:
    """The leader lease as seen by one process.

    Owned by the thread that leads (the worker's); other threads get :attr:`held_until` and
    :attr:`token` as values captured when they are handed work.

    ``held()`` is a local judgement: the lease counts as held only until ``ttl * safety`` after
    the start of the last successful renewal, so a process that was paused longer than that
    stops applying before it even talks to Redis again.
    """

    def __init__(
        self,
        redis: Any,
        layout: Layout,
        holder: str | None = None,
        ttl_ms: int = 5000,
        safety: float = 0.8,
        monotonic: Callable[[], float] = time.monotonic,
        renew_every_s: float = 1.0,
        replicas: int | None = None,
        audit: bool = False,
    ) -> None:
        """``replicas``: how many replicas must acknowledge an acquisition (``WAIT``) before this
        process leads; None: one wherever the cluster's slot map lists a replica (none on a
        single Redis)."""
        self.redis = redis
        self.layout = layout
        self.fences = Fences(redis, layout, audit)  # audit: tests only (readmodel.fences)
        self.replicas = replicas
        self.wait_ms = max(1, min(1000, ttl_ms // 3))
        self.holder = holder or holder_id()
        self.ttl_ms = ttl_ms
        self.safety = safety
        self.token: int | None = None
        self._monotonic = monotonic
        self._valid_until = 0.0
        self.renew_every_s = renew_every_s
        self._renew_due = 0.0

    @property
    def value(self) -> str:
        return f"{self.holder}|{self.token}"

    def acquire(self) -> bool:
        """Take the lease with a new fencing token; True when this process is the leader.

        The token is used only once a replica has it and every slot's copy was raised to it. A
        copy already at or above it means a failover lost the fence's last increments and the
        token was handed out before: a newer one is taken. Not leading (False) when a replica
        does not acknowledge in time, or when the lease expired while the copies were raised."""
        started = self._monotonic()
        self.token = None
        at_least = ""
        for _ in range(3):
            token = self._take(at_least)
            if not token:
                return False
            try:
                newer = self.fences.raise_all(token, self.replicas, self.wait_ms, after_each=partial(self._keep, token))
            except NotReplicated as exc:
                log.warning("not leading: the fence copies of token %d were not replicated (%s)", token, exc)
                self._give_up(token)
                return False
            except LeaseLost:
                log.warning("not leading: the lease of token %d expired or was taken while the copies were raised",
                            token)
                return False
            if not newer:
                self.token = token
                self._valid_until = started + self.ttl_ms / 1000 * self.safety
                # Raising every copy can take a good part of the TTL: lead only if the lease is
                # still ours now (renewed from here on), not merely when the acquisition began.
                return self.renew()
            log.warning("fencing token %d is below a copy already (%d): another process took the lease while the "
                        "copies were raised, or a failover lost the fence's last writes; trying again", token, newer)
            at_least = str(newer + 1)
        self._give_up(token)
        return False

    def _take(self, at_least: str) -> int:
        """Run the acquisition and ``WAIT`` for it on the lease's master; the token or 0."""
        client, want = self.fences.master_of(self.layout.leader, self.replicas)
        replies, acked = self.fences.replicated(client, lambda pipe: scripts.LEASE_ACQUIRE.queue(
            pipe, [self.layout.leader, self.layout.fence], [self.holder, self.ttl_ms, at_least]), want, self.wait_ms)
        token = int(replies[0])
        if token and acked < want:
            log.warning("not leading: %d of %d replicas acknowledged the lease (token %d) in %d ms",
                        acked, want, token, self.wait_ms)
            self._give_up(token)
            return 0
        return token

    def _keep(self, token: int) -> None:
        """Extend the lease of ``token`` while it is being acquired; :class:`LeaseLost` if it is gone."""
        if not int(scripts.call(self.redis, scripts.LEASE_RENEW, [self.layout.leader],
                                [f"{self.holder}|{token}", self.ttl_ms])):
            raise LeaseLost("the lease expired or was taken while the fence copies were raised")

    def _give_up(self, token: int) -> None:
        scripts.call(self.redis, scripts.LEASE_RELEASE, [self.layout.leader], [f"{self.holder}|{token}"])

    def renew(self) -> bool:
        """Extend the lease; False (and no longer held) when another process took it."""
        if self.token is None:
            return False
        started = self._monotonic()
        if int(scripts.call(self.redis, scripts.LEASE_RENEW, [self.layout.leader], [self.value, self.ttl_ms])):
            self._valid_until = started + self.ttl_ms / 1000 * self.safety
            return True
        self.token = None
        return False

    @property
    def held_until(self) -> float:
        """The monotonic time until which the lease counts as held (0.0 when not leading)."""
        return self._valid_until if self.token is not None else 0.0

    def hold(self) -> Hold:
        """Stay the leader or become it: renew when a renewal is due (every ``renew_every_s``)
        or the lease no longer counts as held; acquire when not leading."""
        now = self._monotonic()
        if self.token is not None and now < self._renew_due and self.held():
            return Hold.KEPT
        self._renew_due = now + self.renew_every_s
        if self.token is not None:
            return Hold.KEPT if self.renew() else Hold.TAKEN_OVER
        return Hold.ACQUIRED if self.acquire() else Hold.STANDBY

    def keep(self) -> None:
        """Renew when due in the middle of a long operation; raise :class:`LeaseLost` when lost."""
        if self._monotonic() >= self._renew_due or not self.held():
            self._renew_due = self._monotonic() + self.renew_every_s
            if not self.renew():
                raise LeaseLost("taken over during a long operation")

    def held(self) -> bool:
        return self.token is not None and self._monotonic() < self._valid_until

    def forget(self) -> None:
        """Stop claiming the lease without telling Redis (it was lost: someone else holds it)."""
        self.token = None

    def release(self) -> None:
        """Give the lease up at once (clean shutdown), so a standby takes over without waiting."""
        if self.token is not None:
            scripts.call(self.redis, scripts.LEASE_RELEASE, [self.layout.leader], [self.value])
        self.token = None

    @staticmethod
    def current(redis: Any, layout: Layout) -> tuple[str, int] | None:
        """(holder, fencing token) of the current lease, or None."""
        raw = redis.get(layout.leader)
        if raw is None:
            return None
        holder, _, token = text(raw).rpartition("|")
        return holder, int(token or 0)
