"""Both processes' real /metrics output follows Prometheus conventions (`promtool check metrics`),
and the alert rules the README offers load and fire as described (`promtool check/test rules`)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devkit.waits import wait_for

from .capture_helpers import DB, TASKS, task_doc
from .procs import caught_up
from .promtools import RULES, projector_with_metrics, required_tool

ROOT = Path(__file__).resolve().parents[1]


def documented_metrics() -> set[str]:
    """The metric names README's "Metrics and alerts" table lists (``a_{x,y}_total`` expanded,
    a trailing ``{labels}`` dropped)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Metrics and alerts"):]
    section = section[:section.index("\n## ", 1)]
    names: set[str] = set()
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        for token in re.findall(r"`([a-z_{},]+)`", row.split("|")[1]):
            token = re.sub(r"\{[a-z_,]+\}$", "", token)  # labels
            expanded = re.fullmatch(r"([a-z_]*)\{([a-z_,]+)\}([a-z_]*)", token)
            names.update(expanded[1] + part + expanded[3] for part in expanded[2].split(",")) if expanded else names.add(token)
    return names


def assert_documented(found: dict) -> None:
    """Every livestatus_* metric the process exports is in README's table."""
    exported = set()
    for family in found.values():
        if family.name.startswith("livestatus_"):
            exported.add(family.name + "_total" if family.type == "counter" else family.name)
    assert exported - documented_metrics() == set()


@pytest.fixture(scope="module")
def promtool() -> str:
    return required_tool("promtool", "promtool")


def check_metrics(promtool: str, text: str) -> None:
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(family, sample_name: str, **labels: str) -> float:
    (found,) = [s.value for s in family.samples if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())]
    return found


def assert_process_collectors(found: dict) -> None:
    assert value(found["process_open_fds"], "process_open_fds") > 0
    assert value(found["process_resident_memory_bytes"], "process_resident_memory_bytes") > 0
    assert found["process_max_fds"].type == "gauge" and "python_info" in found


def test_the_projectors_metrics_are_counters_timestamps_and_process_figures(promtool, standin, spawn, real_redis, layout):
    standin.insert(DB, TASKS, task_doc("g1", "u1"))
    standin.insert(DB, TASKS, {"_id": "bad", "status": "processing"})  # no owner: a dead letter
    started_s = time.time()
    _proc, port = projector_with_metrics(spawn, standin, real_redis, layout)
    standin.update(DB, TASKS, "g1", set={"progress": 0.5})

    def scraped() -> dict | None:
        try:
            found = families(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text)
        except httpx.TransportError:
            return None
        events = found.get("livestatus_projector_events")
        return found if events and value(events, "livestatus_projector_events_total") >= 1 else None

    wait_for(lambda: scraped() is not None and caught_up(real_redis, layout, standin), 30,
             "the update counted in /metrics")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    check_metrics(promtool, text)
    found = families(text)
    for name in ("events", "batches", "resyncs", "dead_letters", "errors"):
        assert found[f"livestatus_projector_{name}"].type == "counter", name
    assert value(found["livestatus_projector_resyncs"], "livestatus_projector_resyncs_total") == 1
    assert value(found["livestatus_projector_dead_letters"], "livestatus_projector_dead_letters_total") == 1
    assert value(found["livestatus_projector_leader"], "livestatus_projector_leader", partition="0/1") == 1
    assert value(found["livestatus_projector_state"], "livestatus_projector_state", state="tailing") == 1
    assert value(found["livestatus_projector_state"], "livestatus_projector_state", state="standby") == 0
    for moment in ("checkpoint_timestamp_seconds", "report_timestamp_seconds", "last_event_timestamp_seconds"):
        at = value(found[f"livestatus_projector_{moment}"], f"livestatus_projector_{moment}")
        assert started_s - 60 < at < time.time() + 60, moment  # a moment of this run, not an age
    (build,) = found["livestatus_projector_build_info"].samples
    assert build.value == 1 and build.labels["version"]
    assert_process_collectors(found)
    assert_documented(found)
    ours = [family for name, family in found.items() if name.startswith("livestatus_")]
    assert not [f.name for f in ours if "per_second" in f.name or "rate" in f.name or f.name.endswith("age_seconds")]
    assert not [sample for family in ours for sample in family.samples if sample.value < 0]  # no -1 sentinel


def test_the_apis_metrics_pass_promtool_with_process_figures_and_build_info(promtool, server):
    httpx.get(server.url + "/users/u1/status")  # a 401 is observed too: the histogram has a series
    text = httpx.get(server.url + "/metrics", timeout=5).text
    check_metrics(promtool, text)
    found = families(text)
    assert_process_collectors(found)
    (build,) = found["livestatus_api_build_info"].samples
    assert build.value == 1 and build.labels["version"]
    assert found["livestatus_api_events_sent"].type == "counter"
    assert found["livestatus_api_open_streams"].type == "gauge"
    assert found["livestatus_api_request_seconds"].type == "histogram"
    assert_documented(found)


def test_the_readme_table_is_read_as_intended():
    names = documented_metrics()
    assert {"livestatus_projector_events_total", "livestatus_projector_verify_unsettled_total",
            "livestatus_api_request_seconds", "livestatus_api_stream_resumes_total"} <= names
    assert not any("{" in name or "," in name for name in names)


def test_the_alert_rules_load(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 3 rules found" in result.stdout


def test_the_alert_rules_fire_when_they_should_and_only_then(promtool):
    """prometheus/alerts.test.yml feeds each rule series that must fire and series that must not."""
    result = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=RULES.parent,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
