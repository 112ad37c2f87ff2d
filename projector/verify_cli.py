"""``projector verify [--sample N] [--repair] [--json]``: the command around :mod:`.verify`.

Exit status: 0 the read model matches MongoDB (with ``--repair``: at the end, after repairing and
checking the repaired users again), 1 drift, 2 a usage or connection error. One line per
difference; ``--json`` prints one document instead. Progress bars only on a terminal.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from pymongo.errors import PyMongoError

from readmodel.keys import USER_ID_RE

from .lease import Lease
from .settings import Settings
from .verify import Report, Verifier, VerifyError
from .verify_schedule import REPAIR_WAIT_S, parse_sample, request_key, result_key


def add_parser(commands: Any, handler: Callable[[argparse.Namespace], int],
               *option_groups: Callable[[argparse.ArgumentParser], None]) -> None:
    cmd = commands.add_parser("verify", help="compare the read model with MongoDB; exit 1 on drift")
    cmd.set_defaults(handler=handler)
    for options in option_groups:
        options(cmd)
    cmd.add_argument("--sample", type=_sample, help="check N random users (or a fraction, e.g. 0.05) instead of all")
    cmd.add_argument("--user", action="append", default=[], type=_user, help="check this user (repeatable)")
    cmd.add_argument("--repair", action="store_true", help="re-project the differing documents (fenced, versioned)")
    cmd.add_argument("--json", action="store_true", help="one JSON document on stdout")
    cmd.add_argument("--wait-s", type=float, default=30.0,
                     help="how long to wait for the projector to apply up to the read position (default 30)")


def _user(raw: str) -> str:
    if not USER_ID_RE.match(raw):
        raise argparse.ArgumentTypeError(f"a user id is 1-128 letters, digits or any of : _ . - (got {raw[:40]!r})")
    return raw


def _sample(raw: str) -> float:
    try:
        return parse_sample(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace, settings: Settings, redis: Any, mongo: Any) -> int:
    verifier = Verifier(settings, redis, mongo, wait_s=args.wait_s, progress=sys.stderr.isatty() and not args.json)
    started = time.process_time(), time.monotonic()
    try:
        users = args.user or (verifier.sample(args.sample) if args.sample else None)
        report = verifier.check(users)
        outcome: dict[str, Any] = {}
        if args.repair and report.drift:
            outcome = _repair(verifier, report, args.wait_s)
            after = verifier.check(report.drift_users)
            outcome["remaining"] = [d.as_json() for d in after.drift]
    except (VerifyError, PyMongoError) as exc:
        print(f"projector: verify could not compare: {exc}", file=sys.stderr)
        return 2
    cpu_s, wall_s = time.process_time() - started[0], time.monotonic() - started[1]
    drifted = outcome["remaining"] if args.repair and report.drift else report.drift
    if args.json:
        print(json.dumps({**report.as_json(), **outcome, "cpuSeconds": round(cpu_s, 3),
                          "seconds": round(wall_s, 3)}, indent=2, sort_keys=True))
    else:
        for diff in report.drift:
            print(diff.line())
        for uid in report.unsettled:
            print(f"{'unsettled':<22} user {uid}: written to during every round; not judged")
        summary = (f"{report.users} users, {report.documents} documents, {report.rounds} rounds, position "
                   f"{report.position}: {len(report.drift)} differences in {len(report.drift_users)} users "
                   f"({wall_s:.1f} s, {cpu_s:.1f} s CPU)")
        print(summary, file=sys.stderr if report.drift else sys.stdout)
        if outcome:
            print(f"repaired the differing documents of {len(outcome['users'])} users through {outcome['by']}; "
                  f"{len(outcome['remaining'])} differences remain", file=sys.stderr)
            for diff in outcome["remaining"]:
                print(f"still: {diff['kind']} user {diff['user']} {diff['doc']}: {diff['detail']}")
    return 1 if drifted else 0


def _repair(verifier: Verifier, report: Report, wait_s: float) -> dict[str, Any]:
    """Through the leader: it holds the lease the writes are fenced with, verifies the users again
    and writes the repair behind its batches. (Without a running projector there is no consistent
    position to compare at, so the verify before this has already failed.)"""
    redis, layout = verifier.redis, verifier.layout
    if Lease.current(redis, layout) is None:
        raise VerifyError("no projector holds the lease to write the repair with: start `projector run`")
    request_id = uuid.uuid4().hex
    redis.lpush(request_key(layout), json.dumps({"id": request_id, "users": report.drift_users}))
    deadline = time.monotonic() + wait_s + REPAIR_WAIT_S
    while (raw := redis.get(result_key(layout, request_id))) is None:
        if time.monotonic() > deadline:
            raise VerifyError("the running projector did not answer the repair request in time")
        time.sleep(0.1)
    result = json.loads(raw)
    if "error" in result:
        raise VerifyError(f"the running projector could not repair: {result['error']}")
    return {"by": "the running projector", "users": report.drift_users}
