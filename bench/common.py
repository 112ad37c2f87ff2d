"""What every benchmark shares: result rows, the machine description, Redis scratch space, timing."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from tqdm import tqdm

from projector.times import iso
from readmodel import Layout
from readmodel.connect import connect
from readmodel.settings import store_settings

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Row:
    """One measurement beside its baseline from the same run, and the target it is held to.

    ``target`` reads as ``value >= target`` when ``higher_is_better`` and ``value <= target``
    otherwise; ``ratio_target`` is held against ``value / baseline`` (always higher is better).
    """

    bench: str
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    target: float | None = None
    ratio_target: float | None = None
    higher_is_better: bool = True
    baseline_unit: str | None = None  # set when the baseline is in another unit (then no ratio)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline or self.baseline_unit is not None:
            return None
        return self.value / self.baseline

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "skip"
        checks = []
        if self.target is not None:
            checks.append(self.value >= self.target if self.higher_is_better else self.value <= self.target)
        if self.ratio_target is not None:
            checks.append(self.ratio is not None and self.ratio >= self.ratio_target)
        if not checks:
            return "-"
        return "pass" if all(checks) else "MISS"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["verdict"] = self.verdict
        return data


def now_iso() -> str:
    """The current moment as the read model stamps ``updatedAt``."""
    return iso(datetime.now(UTC)) or ""


def skipped(bench: str, name: str, reason: str) -> Row:
    return Row(bench, name, None, "", note=f"skipped: {reason}")


def progress(total: int | None = None, desc: str = "", unit: str = "it", **kwargs: Any) -> tqdm:
    """A progress bar on stderr (stdout is kept for the results table), off when stderr is no terminal."""
    kwargs.setdefault("disable", None)
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr, leave=False,
                dynamic_ncols=True, **kwargs)


def raise_nofile() -> int:
    """Raise the open-files limit to the hard limit (all a process may do); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------------------- redis


def redis_client(store_env: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """A client of the benchmark's Redis, or of the Redis Cluster ``store_env`` names
    (``REDIS_URL`` + ``REDIS_CLUSTER=1``), made as the projector makes its own."""
    client = connect(store_settings(store_env or {"REDIS_URL": REDIS_URL}), **kwargs)
    client.ping()
    return client


@contextmanager
def local_cluster() -> Iterator[dict[str, str]]:
    """A six-node Redis Cluster on loopback (three masters) for the run; yields its ``store_env``."""
    from devkit.rediscluster import LocalCluster

    with LocalCluster() as cluster:
        yield cluster.env


PREFIXES_USED: list[str] = []  # every scratch prefix of this process (the smoke test checks they are gone)


def new_prefix(tag: str) -> str:
    """A key prefix no one else uses, so a run never touches real (``ls:*``) or test data."""
    prefix = f"bench{tag}{uuid.uuid4().hex[:8]}"
    PREFIXES_USED.append(prefix)
    return prefix


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    """UNLINK every key under ``prefix:`` (SCAN, never FLUSHALL); returns how many."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=Layout(prefix).all_keys_pattern(), count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return deleted


@contextmanager
def scratch_prefix(client: redis.Redis, tag: str) -> Iterator[str]:
    prefix = new_prefix(tag)
    try:
        yield prefix
    finally:
        delete_prefix(client, prefix)


def redis_cpu_seconds(client: Any) -> float:
    """CPU seconds the Redis server (every node of a cluster) has used."""
    info = client.info("cpu")
    nodes = info.values() if "used_cpu_user" not in info else [info]
    return sum(float(node["used_cpu_user"]) + float(node["used_cpu_sys"]) for node in nodes)


# ---------------------------------------------------------------------------- measuring


class Stopwatch:
    """Sums the time spent inside ``with watch:`` blocks (so untimed setup can sit between)."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._start = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed += time.perf_counter() - self._start


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        redis_version = redis_client().info("server")["redis_version"]
    except Exception as exc:  # the table should still say what it could
        redis_version = f"unreachable ({exc.__class__.__name__})"
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "redis": redis_version,
        "redis_py": redis.__version__,
        "kernel": platform.release(),
        "accelerators": _accelerators(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "git": _git_head(),
    }


def _accelerators() -> str:
    """Optional C speed-ups that redis-py and uvicorn pick up by themselves when installed."""
    import importlib.util

    found = [name for name in ("hiredis", "httptools", "uvloop") if importlib.util.find_spec(name)]
    return ", ".join(found) or "none"


def _git_head() -> str:
    if os.environ.get("BENCH_COMMIT"):  # a run from an exported tree (git archive) says what it is
        return os.environ["BENCH_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except Exception:
        return "unknown"
