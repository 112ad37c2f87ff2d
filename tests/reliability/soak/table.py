"""The soak's per-period table and its slope check (pure: no I/O, unit-tested on made-up series).

A resource "grows without bound" when, over the periods after the first (a warm-up: caches fill,
pools open, the read model reaches its steady size), a least-squares line fits the samples well
(r^2 >= ``MIN_R2``) and rises by more than the limit over the run: a fraction of the mean AND an
absolute floor (a few kilobytes or one descriptor of noise must never fail a run). A resource
that is bounded but noisy (RSS after a restart, fds as streams move between API processes) fits
a line badly or has a flat one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_R2 = 0.6

# series name prefix -> (relative growth allowed over the judged periods, absolute floor)
LIMITS = {
    "rss_mb": (0.20, 8.0),
    "fds": (0.20, 8.0),
    "redis_mb": (0.20, 4.0),
    "redis_keys": (0.05, 50.0),
}


@dataclass
class Period:
    index: int
    seconds: float
    applied: int = 0
    marks: int = 0
    delivered: int = 0
    lost: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    bots: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    kills: int = 0
    api_restarts: int = 0
    rss_mb: dict[str, float] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)
    redis_mb: float = 0.0
    redis_keys: int = 0


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def fit(values: list[float]) -> tuple[float, float]:
    """(slope per sample, r^2) of the least-squares line through ``values``."""
    n = len(values)
    if n < 2:
        return 0.0, 0.0
    xs = range(n)
    mx, my = (n - 1) / 2, sum(values) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, values))
    syy = sum((y - my) ** 2 for y in values)
    slope = sxy / sxx
    r2 = (sxy * sxy) / (sxx * syy) if syy > 0 else 0.0
    return slope, r2


def grows(values: list[float], relative: float, floor: float) -> str | None:
    """Why ``values`` grow without bound, or None. Needs at least three samples."""
    if len(values) < 3:
        return None
    slope, r2 = fit(values)
    rise = slope * (len(values) - 1)
    mean = sum(values) / len(values)
    if r2 >= MIN_R2 and rise > floor and rise > relative * max(mean, 1e-9):
        return f"rose {rise:.1f} over {len(values)} periods ({rise / max(mean, 1e-9):.0%} of its mean, r2 {r2:.2f})"
    return None


def role(process: str) -> str:
    """api-1, api-2 -> api: streams move between the API processes, so only their sum is judged."""
    return process.rsplit("-", 1)[0] if process.rsplit("-", 1)[-1].isdigit() else process


def series(periods: list[Period]) -> dict[str, list[float]]:
    """Every watched resource as one series per name (processes of a role are summed)."""
    out: dict[str, list[float]] = {}
    for period in periods:
        for kind, values in (("rss_mb", period.rss_mb), ("fds", period.fds)):
            summed: dict[str, float] = {}
            for process, value in values.items():
                if process != role(process) and role(process) in values:
                    continue  # the role's peak sampled as one sum is given: peaks of its processes
                    # summed would count streams that moved from one to the other twice
                summed[role(process)] = summed.get(role(process), 0.0) + value
            for name, value in summed.items():
                out.setdefault(f"{kind} {name}", []).append(value)
        out.setdefault("redis_mb", []).append(period.redis_mb)
        out.setdefault("redis_keys", []).append(float(period.redis_keys))
    return out


def slope_failures(periods: list[Period]) -> list[str]:
    """The resources that grow without bound over the periods after the first one."""
    judged = periods[1:]
    failures = []
    for name, values in series(judged).items():
        relative, floor = LIMITS[name.split()[0]]
        why = grows(values, relative, floor)
        if why:
            failures.append(f"{name} {why}: {', '.join(f'{v:g}' for v in values)}")
    return failures


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def header(roles: list[str]) -> str:
    cols = ["period", "min", "applied", "marks", "late >20 s", "p50 ms", "p99 ms", "bots 200/503/other", "reconn",
            "kills", "api rst"]
    cols += [f"{role} MB/fds" for role in roles] + ["redis MB", "keys"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def row(period: Period, roles: list[str]) -> str:
    bots = period.bots
    other = sum(v for k, v in bots.items() if k not in ("200", "503"))
    cells = [str(period.index + 1), f"{period.seconds / 60:.1f}", f"{period.applied:,}", f"{period.marks:,}",
             str(period.lost), _ms(period.p50_ms), _ms(period.p99_ms),
             f"{bots.get('200', 0):,}/{bots.get('503', 0):,}/{other:,}", str(period.reconnects), str(period.kills),
             str(period.api_restarts)]
    cells += [f"{period.rss_mb.get(role, 0):.0f}/{period.fds.get(role, 0)}" for role in roles]
    cells += [f"{period.redis_mb:.1f}", f"{period.redis_keys:,}"]
    return "| " + " | ".join(cells) + " |"
