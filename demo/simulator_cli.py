"""Run the traffic simulator alone against any MongoDB: ``python -m demo.simulator_cli``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from .simulator import DEMO_USERS, Simulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mongo-url", default=os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017/?directConnection=true"))
    parser.add_argument("--db", default=os.environ.get("MONGO_DB", "app"))
    parser.add_argument("--users", default=",".join(DEMO_USERS), help="comma-separated masterAccountIds")
    parser.add_argument("--speed", type=float, default=1.0, help="time multiplier (2 = twice as fast)")
    args = parser.parse_args(argv)
    simulator = Simulator(args.mongo_url, args.db, users=args.users.split(","), speed=args.speed)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    simulator.start()
    print(f"simulating tasks for {len(simulator.users)} users against {args.db}; Ctrl-C stops", file=sys.stderr)
    try:
        while not done.wait(5):
            c = simulator.counters
            print(f"started {c.tasks_started} finished {c.tasks_finished} writes {c.writes}", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
