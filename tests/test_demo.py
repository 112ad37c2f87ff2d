"""The README's first command works: the demo starts every piece, shows live data, stops cleanly."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from devkit.ports import free_port, port_open


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("redis_probe", "says"), [
    ("redis://127.0.0.1:6379/0", "Redis: using the one at redis://127.0.0.1:6379/0"),
    ("redis://127.0.0.1:1/0", "started an embedded one (fakeredis)"),
], ids=["local-redis", "embedded-redis"])
def test_demo_runs_the_pipeline_and_stops_cleanly_on_sigint(redis_probe, says):
    api_port, mongo_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "demo", "--api-port", str(api_port), "--mongo-port", str(mongo_port), "--speed", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "DEMO_LOCAL_REDIS": redis_probe},
    )
    lines = []
    try:
        deadline = time.monotonic() + 120
        summaries = 0
        while time.monotonic() < deadline and summaries < 4:
            line = process.stdout.readline()
            assert line, "demo exited early:\n" + "".join(lines)
            lines.append(line)
            summaries += " live tasks " in line
        output = "".join(lines)
        assert summaries == 4, output
        assert says in output
        panel = re.search(r"web panel\s+(\S+)", output).group(1)
        assert urllib.request.urlopen(panel, timeout=5).status == 200
        key = re.search(r"Authorization: Bearer (\S+)' (\S+/status)\n", output)
        request = urllib.request.Request(key.group(2), headers={"Authorization": f"Bearer {key.group(1)}"})
        snapshot = urllib.request.urlopen(request, timeout=5).read().decode()
        assert '"masterAccountId":"demo-alice"' in snapshot.replace(" ", "")
        assert re.search(r"tasks started [1-9]", output), output
    finally:
        process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # A demo that did not stop on SIGINT must not outlive the test with its children:
            # SIGTERM stops them too (the demo handles it), SIGKILL only the demo.
            process.terminate()
            try:
                process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
            raise
    assert process.returncode == 0, rest
    assert "stopped" in rest
    assert not port_open(api_port) and not port_open(mongo_port)
