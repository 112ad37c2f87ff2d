"""Stopping a process that tests, benchmarks or the demo started: by its own handle, never by name."""

from __future__ import annotations

import signal
import subprocess


def stop_process(proc: subprocess.Popen, timeout_s: float = 15) -> bool:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``; True when it had to be killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return True
    return False
