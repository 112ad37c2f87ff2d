"""The ``projector`` command line: its subcommands and their options.

Each option that is also a setting names its environment variable and default in its help, and
its value reaches the settings through that variable (:func:`environment`), so a flag is checked
exactly like the variable it overrides. No mutable state.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from typing import Any

from readmodel.cmdline import Parser, add_common, positive_number, whole_number

from . import health, verify_cli

DESCRIPTION = """\
Tail the platform's MongoDB into the Redis read model (run), and the operator commands around it.
Settings come from environment variables; each option below overrides the variable it names.
A secret setting (MONGO_URL, REDIS_URL) can be read from a file named by NAME_FILE."""

# option dest -> the environment variable it overrides
SETTINGS = {
    "mongo_url": "MONGO_URL", "mongo_db": "MONGO_DB", "tasks_collection": "TASKS_COLLECTION",
    "economy_collection": "ECONOMY_COLLECTION", "batch_size": "BATCH_SIZE", "redis_url": "REDIS_URL",
    "key_prefix": "KEY_PREFIX", "partition": "PARTITION", "metrics_port": "METRICS_PORT",
}


def environment(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``env`` with the options given on the command line written over the variables they name."""
    given = {SETTINGS[name]: str(value) for name, value in vars(args).items() if name in SETTINGS and value is not None}
    if "MONGO_URL" in given:
        given["MONGO_URL_FILE"] = ""  # the flag wins over a file as over the variable
    if "REDIS_URL" in given:
        given["REDIS_URL_FILE"] = ""
    return {**env, **given}


def redis_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--redis-url", metavar="URL", help="env REDIS_URL, default redis://127.0.0.1:6379/0")
    cmd.add_argument("--key-prefix", metavar="PREFIX", help="env KEY_PREFIX, default ls")
    cmd.add_argument("--partition", metavar="K/N", help="env PARTITION: this process's share when N processes split "
                                                         "the stream by document id; default 0/1 (all of it)")


def mongo_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--mongo-url", metavar="URL",
                     help="env MONGO_URL, default mongodb://127.0.0.1:27017/?directConnection=true")
    cmd.add_argument("--mongo-db", metavar="NAME", help="env MONGO_DB, default app")
    cmd.add_argument("--tasks-collection", metavar="NAME", help="env TASKS_COLLECTION, default generationOutputs")
    cmd.add_argument("--economy-collection", metavar="NAME", help="env ECONOMY_COLLECTION, default userEconomy")
    cmd.add_argument("--batch-size", type=whole_number(1), metavar="N",
                     help="env BATCH_SIZE: events per Redis batch, default 1000")


def parser(handlers: Mapping[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:
    """The parser; ``handlers`` maps each subcommand to the function that runs it."""
    root = Parser(prog="projector", description=DESCRIPTION)
    add_common(root)
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    def command(name: str, summary: str, *options: Callable[[argparse.ArgumentParser], None]) -> Any:
        cmd = commands.add_parser(name, help=summary, description=f"projector {name}: {summary}.")
        for add in options:
            add(cmd)
        cmd.set_defaults(handler=handlers[name])
        return cmd

    run = command("run", "tail MongoDB into the read model (one leader per Redis and partition)",
                  mongo_options, redis_options)
    run.add_argument("--metrics-port", type=whole_number(1), metavar="PORT",
                     help="env METRICS_PORT: serve Prometheus metrics on this port; default none")
    run.add_argument("--lease-ttl-ms", type=whole_number(100), default=5000, metavar="MS",
                     help="leader lease time to live; default 5000")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar during a resync (there is none anyway when stderr is not a terminal)")

    status = command("status", "the worker's health, lease and checkpoint", redis_options)
    status.add_argument("--json", action="store_true", help="one JSON document instead of the table")

    check = command("check", "exit 0 when the worker is healthy, 1 otherwise", redis_options)
    check.add_argument("--max-lag-s", type=positive_number, default=health.LAG_LIMIT_MS / 1000, metavar="S",
                       help=f"unhealthy beyond this lag; default {health.LAG_LIMIT_MS / 1000:g}")

    command("resync", "rebuild the read model from the collections", mongo_options, redis_options)

    dead = command("deadletters", "documents that could not be projected, newest first", redis_options)
    dead.add_argument("--limit", type=whole_number(1), default=20, metavar="N", help="show this many; default 20")
    dead.add_argument("--json", action="store_true", help="a JSON list instead of text")

    inspect = command("inspect", "one user's snapshot and raw Redis keys", redis_options)
    inspect.add_argument("user", help="the masterAccountId")
    inspect.add_argument("--json", action="store_true", help="one JSON document instead of text")

    verify_cli.add_parser(commands, handlers["verify"], mongo_options, redis_options)
    return root
