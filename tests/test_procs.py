"""The test helpers that run processes: a log read while its process writes loses no line."""

from __future__ import annotations

import re
import sys

from .procs import logged, output

LINES = 2000


def test_reading_a_log_while_its_process_writes_loses_no_line(tmp_path):
    writes = f"import time\nfor i in range({LINES}):\n    print(f'line {{i}} ' + 'x' * 80)\n    time.sleep(0.0002)"
    proc = logged([sys.executable, "-c", writes], tmp_path / "child.log")
    try:
        while proc.poll() is None:  # as a wait_for on the log does, without its 50 ms pause
            output(proc)
        assert proc.wait(60) == 0
        log = output(proc)
    finally:
        proc.kill()
        proc.wait()
        proc.log.close()
    found = {int(n) for n in re.findall(r"^line (\d+) x+$", log, re.M)}
    assert found == set(range(LINES))
