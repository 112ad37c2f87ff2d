"""``python -m bench``: run the benchmarks, print the table, write bench/results/latest.json."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from .common import Row, machine, raise_nofile

RESULTS = Path(__file__).parent / "results"
DOC = Path(__file__).parent.parent / "docs" / "performance-history.md"  # the runs go to the appendix
BEGIN, END = "<!-- bench:runs:begin -->", "<!-- bench:runs:end -->"
KEEP_RUNS = 4

# name -> module with run(quick: bool) -> list[Row]; imported lazily so one benchmark's missing
# dependency does not stop the others.
BENCHMARKS = {
    "throughput": "bench.throughput",
    "latency": "bench.latency",
    "delivery": "bench.delivery",
    "capacity": "bench.capacity",
    "reads": "bench.reads",
    "resync": "bench.resync",
    "catchup": "bench.catchup",
    "scaleout": "bench.scaleout",
    "verify": "bench.verify",
    "storm": "bench.storm",
    "polls": "bench.polls",
    "fresh": "bench.fresh",
}


def _runner(name: str) -> Callable[..., list[Row]]:
    return importlib.import_module(BENCHMARKS[name]).run


def run_all(names: list[str], quick: bool) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        started = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            produced = _runner(name)(quick=quick)
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc(file=sys.stderr)
            produced = [Row(name, "(failed)", None, "", note=f"error: {exc.__class__.__name__}: {exc}"[:200])]
        rows.extend(produced)
        print(f"[bench] {name} done in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------------------- rendering


def fmt(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def target_text(row: Row) -> str:
    parts = []
    if row.target is not None:
        parts.append(("≥ " if row.higher_is_better else "≤ ") + fmt(row.target, row.unit))
    if row.ratio_target is not None:
        parts.append(f"≥ {row.ratio_target:g}× baseline")
    return ", ".join(parts) or "-"


def table(rows: list[Row], markdown: bool = False) -> str:
    header = ["bench", "measurement", "value", "baseline (same run)", "ratio", "target", "result"]
    lines = []
    for row in rows:
        baseline = f"{fmt(row.baseline)} ({row.baseline_name})" if row.baseline is not None else "-"
        ratio = f"{row.ratio:.2f}×" if row.ratio is not None else "-"
        value = fmt(row.value, row.unit) if row.value is not None else row.note
        lines.append([row.bench, row.name, value, baseline, ratio, target_text(row), row.verdict])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    sep = "  "
    out = [sep.join(h.ljust(w) for h, w in zip(header, widths)), sep.join("-" * w for w in widths)]
    out += [sep.join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def notes(rows: list[Row]) -> str:
    return "\n".join(f"- {row.bench} / {row.name}: {row.note}" for row in rows if row.note and row.value is not None)


def machine_text(info: dict) -> str:
    return (f"{info['nproc']} × {info['cpu']}, Python {info['python']}, Redis {info['redis']}, "
            f"redis-py {info['redis_py']} (C speed-ups: {info['accelerators']}), Linux {info['kernel']}, "
            f"load at start {info['loadavg_at_start']}, "
            f"commit {info['git']}")


# ---------------------------------------------------------------------------- recording


def write_results(report: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    latest = RESULTS / "latest.json"
    latest.write_text(json.dumps(report, indent=2, default=str))
    stamp = report["started"].replace(":", "").replace("-", "")
    (RESULTS / f"run-{stamp}.json").write_text(json.dumps(report, indent=2, default=str))
    return latest


def record(report: dict, rows: list[Row]) -> None:
    """Add this run (machine + table) to the generated block of docs/performance-history.md, newest first."""
    section = "\n".join([
        f"### Run {report['started']} ({'quick' if report['quick'] else 'full'}: {', '.join(report['only'])})",
        "",
        f"Machine: {machine_text(report['machine'])}.",
        "",
        table(rows, markdown=True),
        "",
        notes(rows),
        "",
    ])
    text = DOC.read_text() if DOC.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n## Recorded runs\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    runs = body.split("\n### Run ")[1:]
    kept = [section, *["### Run " + part.strip("\n") + "\n" for part in runs][: KEEP_RUNS - 1]]
    DOC.write_text(head + BEGIN + "\n" + "\n".join(kept) + END + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not a measurement")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
                        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    parser.add_argument("--record", action="store_true",
                        help="also add this run's table and machine to docs/performance-history.md")
    parser.add_argument("--record-from", metavar="RESULTS.json", action="append",
                        help="record a finished run's results file in docs/performance-history.md instead of running")
    args = parser.parse_args(argv)
    if args.record_from:
        for path in args.record_from:
            report = json.loads(Path(path).read_text())
            rows = [Row(**{k: v for k, v in item.items() if k in Row.__dataclass_fields__})
                    for item in report["results"]]
            record(report, rows)
            print(f"[bench] recorded {path} in {DOC}", file=sys.stderr)
        return 0
    names = args.only or list(BENCHMARKS)
    raise_nofile()
    info = machine()
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"[bench] {machine_text(info)}", file=sys.stderr, flush=True)
    rows = run_all(names, args.quick)
    report = {"started": started, "quick": args.quick, "only": names, "machine": info,
              "results": [row.as_dict() for row in rows]}
    path = write_results(report)
    print(f"\nMachine: {machine_text(info)}{' (QUICK sizes)' if args.quick else ''}\n")
    print(table(rows))
    if notes(rows):
        print("\n" + notes(rows))
    print(f"\n[bench] results written to {path}", file=sys.stderr)
    if args.record:
        record(report, rows)
        print(f"[bench] recorded in {DOC}", file=sys.stderr)
    return 0
