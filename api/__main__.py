"""``livestatus-api`` (or ``python -m api``) serves the API; ``livestatus-api token USER`` mints a user token."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

from readmodel import cmdline
from readmodel.cmdline import Parser, add_common, whole_number
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
        log_config=None,  # uvicorn's loggers go through the process's one handler (readmodel.logs)
        **options,
    )
    return uvicorn.Server(config)


def _serve(args: argparse.Namespace) -> int:
    from .main import create_app

    env = dict(os.environ)
    if args.insecure_dev:
        env["API_INSECURE_DEV"] = "1"
    if args.host is not None:
        env["API_HOST"] = args.host
    if args.port is not None:
        env["API_PORT"] = str(args.port)
    try:
        settings = Settings.from_env(env)
        app = create_app(settings, freeze_heap=True)
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


DESCRIPTION = """\
Serve the livestatus API (REST, Server-Sent Events, /metrics) from the Redis read model, or mint
a user token (livestatus-api token USER). Settings come from environment variables (see the README's
table); each option below overrides the variable it names. API_KEYS, AUTH_SECRET and REDIS_URL can
be read from files named by API_KEYS_FILE, AUTH_SECRET_FILE and REDIS_URL_FILE."""


def parser() -> argparse.ArgumentParser:
    root = Parser(prog="livestatus-api", description=DESCRIPTION)
    add_common(root)
    root.add_argument("--host", metavar="ADDRESS", help="bind address: env API_HOST, default 127.0.0.1")
    root.add_argument("--port", type=whole_number(1), metavar="PORT", help="env API_PORT, default 8000")
    root.add_argument("--insecure-dev", action="store_true",
                      help="serve without API_KEYS and AUTH_SECRET (env API_INSECURE_DEV=1, default off); never in production")
    sub = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    token = sub.add_parser("token", help="mint a user token (reads AUTH_SECRET)",
                           description="livestatus-api token: print a user token for USER, signed with AUTH_SECRET.")
    token.add_argument("user", help="the masterAccountId")
    token.add_argument("--ttl", type=whole_number(1), default=DEFAULT_TTL_S, metavar="S",
                       help=f"seconds until it expires; default {DEFAULT_TTL_S}, at most TOKEN_MAX_LIFETIME_S")
    return root


def main(argv: list[str] | None = None) -> int:
    args = cmdline.parse(parser(), argv)
    if args.command == "token":
        return _token(args)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
