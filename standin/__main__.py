"""Run a stand-in as a process: ``python -m standin --port 27017`` until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import StandIn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=27017, help="port to listen on, 0 for any free port (default 27017)")
    parser.add_argument("--replica-set", default="rs0", help="replica set name to advertise (default rs0)")
    parser.add_argument(
        "--oplog-limit", type=int, default=1_000_000, help="keep at most this many change events (default 1000000)"
    )
    parser.add_argument(
        "--noop-interval", type=float, default=10.0,
        help="seconds of an idle oplog before the periodic no-op entry, as the server's periodicNoopIntervalSecs (default 10)",
    )
    args = parser.parse_args(argv)

    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())

    try:
        mongo = StandIn(args.port, args.host, replica_set=args.replica_set, oplog_limit=args.oplog_limit,
                        noop_interval=args.noop_interval).start()
    except OSError as error:
        print(f"standin: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    print(f"standin: MongoDB stand-in serving {mongo.url} (Ctrl-C to stop)", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        mongo.stop()
        print("standin: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
