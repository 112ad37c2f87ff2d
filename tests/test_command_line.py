"""The installed commands as an operator meets them: plain --help naming each option's variable and
default, --version, one sentence and exit 2 for a bad value (never a traceback), and logs (text
with timestamps, or one JSON object per line from every logger, uvicorn's included)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.ports import free_port
from devkit.waits import wait_for
from projector import cli as projector_cli

from .apiserver import KEY, SECRET

BIN = Path(sys.executable).parent
SECRET_KEY = "k" * 40
BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REDIS_URL": "redis://127.0.0.1:1/0"}


def run(command: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / command), *args], env={**BASE_ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


BAD_VALUES = [
    # command, args, environment, what the one line must name
    ("projector", ["--log-level", "verbose", "status"], {}, "--log-level"),
    ("projector", ["status"], {"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
    ("projector", ["status"], {"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ("projector", ["run"], {"MONGO_URL": "mongodb://localhost:99999/"}, "MONGO_URL"),
    ("projector", ["run"], {"MONGO_URL": "http://localhost/"}, "MONGO_URL"),
    ("projector", ["run", "--batch-size", "-5"], {}, "--batch-size"),
    ("projector", ["run"], {"BATCH_SIZE": "-5"}, "BATCH_SIZE"),
    ("projector", ["run"], {"BATCH_SIZE": "2.5"}, "BATCH_SIZE"),
    ("projector", ["run", "--metrics-port", "70000"], {}, "METRICS_PORT"),
    ("projector", ["run", "--lease-ttl-ms", "ten"], {}, "--lease-ttl-ms"),
    ("projector", ["check", "--max-lag-s", "-1"], {}, "--max-lag-s"),
    ("projector", ["deadletters", "--limit", "0"], {}, "--limit"),
    ("projector", ["status", "--partition", "3/2"], {}, "PARTITION"),
    ("projector", ["status"], {"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
    ("projector", ["status"], {"KEY_PREFIX": "has space"}, "KEY_PREFIX"),
    ("projector", ["run"], {"MONGO_URL_FILE": "/nonexistent/mongo_url"}, "MONGO_URL_FILE"),
    ("projector", ["frobnicate"], {}, "frobnicate"),
    ("livestatus-api", [], {"STREAMS_PER_USER": "2.5"}, "STREAMS_PER_USER"),
    ("livestatus-api", [], {"STREAMS_PER_USER": "-1"}, "STREAMS_PER_USER"),
    ("livestatus-api", ["--port", "99999"], {}, "API_PORT"),
    ("livestatus-api", ["--port", "-1"], {}, "--port"),
    ("livestatus-api", ["--log-level", "verbose"], {}, "--log-level"),
    ("livestatus-api", [], {"SSE_HEARTBEAT_S": "soon"}, "SSE_HEARTBEAT_S"),
    ("livestatus-api", [], {"API_KEYS": "short-key"}, "API_KEYS"),
    ("livestatus-api", [], {"API_KEYS_FILE": "/nonexistent/api_keys"}, "API_KEYS_FILE"),
    ("livestatus-api", [], {"API_INSECURE_DEV": "maybe"}, "API_INSECURE_DEV"),
    ("livestatus-api", ["token", "u1", "--ttl", "-3"], {}, "--ttl"),
]


@pytest.mark.parametrize(("command", "args", "env", "named"), BAD_VALUES,
                         ids=[f"{c} {' '.join(a)} {' '.join(f'{k}={v}' for k, v in e.items())}".strip()
                              for c, a, e, _ in BAD_VALUES])
def test_a_bad_value_is_one_sentence_and_exit_2(command, args, env, named):
    good = {"API_KEYS": SECRET_KEY, "AUTH_SECRET": SECRET} if command == "livestatus-api" else {}
    result = run(command, *args, env={**good, **env})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert named in lines[0] and lines[0].startswith(command), lines[0]
    assert not result.stdout


def _subcommands() -> list[list[str]]:
    root = projector_cli.parser()
    [commands] = [action for action in root._actions if action.dest == "command"]
    return [["projector"], *(["projector", name] for name in commands.choices), ["livestatus-api"],
            ["livestatus-api", "token"]]


@pytest.mark.parametrize("command", _subcommands(), ids=" ".join)
def test_help_is_plain_text_and_names_each_settings_variable_and_default(command):
    result = run(command[0], *command[1:], "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert not re.search(r"``|:(class|func|mod|data):|\*\*", text), text
    assert "python -m" not in text
    section = text[text.index("\noptions:"):]
    options = re.findall(r"^  (--[a-z-]+)", section, re.M)
    assert options
    for flag in options:
        if flag in ("--help", "--version"):
            continue
        # The flag's whole help (it may wrap onto the next lines).
        block = " ".join(section[section.index(f"  {flag}"):].split("\n  -", 1)[0].split())
        variable = {"--redis-url": "REDIS_URL", "--key-prefix": "KEY_PREFIX", "--partition": "PARTITION",
                    "--mongo-url": "MONGO_URL", "--mongo-db": "MONGO_DB", "--batch-size": "BATCH_SIZE",
                    "--metrics-port": "METRICS_PORT", "--log-level": "LOG_LEVEL", "--host": "API_HOST",
                    "--port": "API_PORT", "--insecure-dev": "API_INSECURE_DEV"}.get(flag)
        if variable:
            assert f"env {variable}" in block, block
        if flag not in ("--json", "--no-progress", "--repair", "--user", "--sample"):
            assert "default" in block, block


@pytest.mark.parametrize("command", ["projector", "livestatus-api"])
def test_version(command):
    result = run(command, "--version")
    assert result.returncode == 0 and re.fullmatch(rf"{command} \d+\.\d+\.\d+\S*\n", result.stdout), result


def _serve(log_format: str) -> str:
    """Start the API on a free port, make one request, stop it; its stderr."""
    port = free_port()
    env = {**os.environ, "API_KEYS": KEY, "AUTH_SECRET": SECRET, "LOG_FORMAT": log_format, "REDIS_URL": "redis://127.0.0.1:6379/0",
           "KEY_PREFIX": "logtest"}
    proc = subprocess.Popen([str(BIN / "livestatus-api"), "--port", str(port), "--log-level", "info"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import httpx

        def answered() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz?token=eyJhbGciOi.abc.def", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answered, timeout_s=30, what="the API answering /healthz")
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    return stderr


def test_json_logs_are_one_object_per_line_from_every_logger_uvicorns_included():
    stderr = _serve("json")
    entries = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert entries and all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    loggers = {entry["logger"] for entry in entries}
    assert "uvicorn.access" in loggers and "uvicorn.error" in loggers, loggers
    access = [entry["message"] for entry in entries if entry["logger"] == "uvicorn.access"]
    assert any("/healthz" in message for message in access) and not any("eyJhbGciOi" in m for m in access), access
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"]) for entry in entries)


def test_text_logs_carry_timestamps_uvicorns_included():
    lines = [line for line in _serve("text").splitlines() if line.strip()]
    assert lines and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+: ", line) for line in lines), lines
    assert any(" uvicorn.access: " in line for line in lines)
