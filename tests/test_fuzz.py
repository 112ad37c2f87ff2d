"""A short coverage-guided fuzz run (atheris) over normalization and whole change events: any
exception, unbounded record or unbounded reason is a crash. `make fuzz` runs the long one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECONDS = int(os.environ.get("FUZZ_SECONDS", "20"))


# The wall-clock bounds only catch a hang: atheris instruments the projector's modules before the
# SECONDS of fuzzing (~10 s of CPU), which took over 60 s of wall time at a load average of 20-30.
@pytest.mark.timeout(SECONDS + 300)
def test_a_short_fuzz_run_over_documents_finds_no_crash(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "fuzz.documents", f"-max_total_time={SECONDS}", f"-artifact_prefix={tmp_path}/",
         "-print_final_stats=1", str(tmp_path / "corpus")],
        cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 240,
    )
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert run.returncode == 0 and not crashes, f"{crashes}\n{run.stderr[-4000:]}"
    assert "Done" in run.stderr and "stat::number_of_executed_units" in run.stderr
    assert len(list((tmp_path / "corpus").iterdir())) > 4  # coverage found inputs beyond the seeds
