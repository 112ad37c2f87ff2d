"""The one-command demo: ``python -m demo`` (or ``make demo``).

Starts a Redis (the local one if it answers, else an embedded fakeredis), the MongoDB wire-protocol
stand-in, the real ``projector run``, the API and a traffic simulator; prints the panel URL for a
demo user, then a live summary until Ctrl-C (or ``--duration``), and stops everything cleanly.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time

from .processes import Stack, StartupError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument("--api-port", type=int, default=int(os.environ.get("API_PORT", 8000)))
    parser.add_argument("--mongo-port", type=int, default=0, help="stand-in port (0: any free port)")
    parser.add_argument("--redis-url", default=os.environ.get("DEMO_REDIS_URL"),
                        help="use this Redis (default: local 127.0.0.1:6379 if it answers, else embedded)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated time multiplier")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--user", default="demo-alice", help="the user whose panel URL is printed")
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Ctrl-C (SIGINT) stops the demo even when a non-interactive shell started it in the background:
    # such a shell starts background jobs with SIGINT ignored, and Python keeps an inherited SIG_IGN.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stack = Stack(api_port=args.api_port, mongo_port=args.mongo_port, redis_url=args.redis_url,
                  service_key=f"demo-{secrets.token_hex(16)}", auth_secret=secrets.token_hex(32),
                  speed=args.speed)
    try:
        stack.start(progress=lambda step, text: print(f"[{step}/6] {text}", flush=True))
        stack.print_urls(args.user)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop.wait(3):
            print(stack.summary(args.user), flush=True)
            if deadline is not None and time.monotonic() >= deadline:
                break
    except StartupError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        print("stopping…", flush=True)
        stack.stop()
        print("stopped: all processes ended, ports freed.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
