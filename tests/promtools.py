"""What the Prometheus tests share: the alert rules file, the tools (promtool, prometheus: required
in CI, skipped on a dev machine without them) and a `projector run` serving /metrics."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devkit.ports import port_below_ephemeral_range
from devkit.waits import wait_for

from .procs import caught_up, output

RULES = Path(__file__).resolve().parents[1] / "prometheus" / "alerts.yml"


def required_tool(name: str, package: str) -> str:
    """``name``'s path; CI installs it (scripts/ensure-promtool), so only a dev machine may skip."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI: .ci/run must run scripts/ensure-promtool")
        pytest.skip(f"{package} is not installed here (bash scripts/ensure-promtool installs it)")
    return found


def projector_with_metrics(spawn, standin, redis, layout) -> tuple[subprocess.Popen, int]:
    """A `projector run` on the stand-in serving /metrics on a free port, once it has synced (its
    log printed when it does not)."""
    port = port_below_ephemeral_range()
    proc = spawn("--mongo-url", standin.url, "--metrics-port", str(port))
    try:
        wait_for(lambda: caught_up(redis, layout, standin), 30, "the initial sync")
    except AssertionError:
        print(output(proc))  # the projector's log, for the report
        raise
    return proc, port
