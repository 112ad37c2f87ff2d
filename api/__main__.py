"""``python -m api`` serves the API; ``python -m api token USER [--ttl S]`` mints a user token."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Any

from readmodel.keys import USER_ID_PATTERN

from .auth import DEFAULT_TTL_S, mint_token
from .settings import Settings, SettingsError


def server(app: Any, settings: Settings, **options: Any) -> Any:
    """A uvicorn server for ``app`` (open SSE streams end by themselves when it shuts down)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # A backstop: sse-starlette notices the shutdown within 0.5 s and gives streams
        # SSE_SHUTDOWN_GRACE_S; nothing may keep the process up longer.
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s) + 2),
        proxy_headers=True,
        **options,
    )
    return uvicorn.Server(config)


def _serve(args: argparse.Namespace) -> int:
    from .main import create_app

    env = dict(os.environ)
    if args.insecure_dev:
        env["API_INSECURE_DEV"] = "1"
    try:
        settings = Settings.from_env(env, host=args.host, port=args.port)
        app = create_app(settings)
    except SettingsError as exc:
        print(f"livestatus-api: {exc}", file=sys.stderr)
        return 2
    server(app, settings, log_level=args.log_level).run()
    return 0


def _token(args: argparse.Namespace) -> int:
    # The token settings the API will check it against (service keys play no part here).
    env = {name: value for name, value in os.environ.items() if name != "API_KEYS"}
    try:
        settings = Settings.from_env(env)
    except SettingsError as exc:
        print(f"livestatus-api: {exc}", file=sys.stderr)
        return 2
    if not settings.auth_secret:
        print("livestatus-api: AUTH_SECRET is not set", file=sys.stderr)
        return 2
    if not re.fullmatch(USER_ID_PATTERN, args.user):
        print(f"livestatus-api: not a valid masterAccountId: {args.user!r}", file=sys.stderr)
        return 2
    if not 0 < args.ttl <= settings.token_max_lifetime_s:
        print(
            f"livestatus-api: --ttl must be between 1 and TOKEN_MAX_LIFETIME_S ({settings.token_max_lifetime_s:g} s); "
            "the API refuses longer-lived tokens",
            file=sys.stderr,
        )
        return 2
    print(mint_token(settings.auth_secret, args.user, args.ttl, audience=settings.token_audience, issuer=settings.token_issuer))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__)
    parser.add_argument("--host", default=None, help="bind address (API_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (API_PORT, default 8000)")
    parser.add_argument(
        "--insecure-dev", action="store_true", help="serve without API_KEYS/AUTH_SECRET (API_INSECURE_DEV=1); never in production"
    )
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    sub = parser.add_subparsers(dest="command")
    token = sub.add_parser("token", help="mint a user token (reads AUTH_SECRET)")
    token.add_argument("user", help="masterAccountId")
    token.add_argument("--ttl", type=int, default=DEFAULT_TTL_S, help=f"seconds until it expires (default {DEFAULT_TTL_S})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "token":
        return _token(args)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
