"""A real Prometheus (Debian's, the package that brings promtool) scrapes a `projector run` process
and `python -m api`, loads prometheus/alerts.yml, and raises LivestatusProjectorNotApplying when the
projector stops: the rules name the metrics the processes really export."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from devkit.ports import port_below_ephemeral_range
from devkit.waits import wait_for

from .apiserver import Server
from .capture_helpers import DB, TASKS, task_doc
from .promtools import RULES, projector_with_metrics, required_tool


@pytest.fixture
def prometheus_binary() -> str:
    return required_tool("prometheus", "Debian's prometheus")


@pytest.fixture
def api(prefix, store_env):
    server = Server(prefix, env=dict(store_env)).start()
    yield server
    server.stop()


def start_prometheus(binary: str, folder: Path, targets: dict[str, int]) -> tuple[subprocess.Popen, str]:
    scrapes = "".join(
        f"  - job_name: {job}\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n" for job, port in targets.items()
    )
    config = folder / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                      f"rule_files: ['{RULES}']\nscrape_configs:\n{scrapes}")
    port = port_below_ephemeral_range()
    log = open(folder / "prometheus.log", "w")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc, f"http://127.0.0.1:{port}"


def query(url: str, expr: str) -> list[dict]:
    try:
        answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=2).json()
    except (httpx.TransportError, ValueError):
        return []
    return answer.get("data", {}).get("result", [])


def alerts(url: str) -> dict[str, str]:
    try:
        found = httpx.get(f"{url}/api/v1/alerts", timeout=2).json()["data"]["alerts"]
    except (httpx.TransportError, ValueError, KeyError):
        return {}
    return {alert["labels"]["alertname"]: alert["state"] for alert in found}


def test_prometheus_scrapes_both_processes_and_the_rules_fire_on_their_real_metrics(
        prometheus_binary, standin, spawn, api, real_redis, layout, tmp_path):
    standin.insert(DB, TASKS, task_doc("g1", "u1"))
    projector, metrics_port = projector_with_metrics(spawn, standin, real_redis, layout)
    prometheus, url = start_prometheus(prometheus_binary, tmp_path, {"projector": metrics_port, "api": api.port})
    try:
        wait_for(lambda: len(query(url, "up == 1")) == 2, 60, "Prometheus scraping both processes")
        (leader,) = query(url, "livestatus_projector_leader")
        assert leader["metric"]["partition"] == "0/1" and leader["value"][1] == "1"
        assert query(url, 'process_open_fds{job="api"} > 0') and query(url, 'process_resident_memory_bytes{job="projector"}')
        assert query(url, "livestatus_api_build_info") and query(url, "livestatus_projector_checkpoint_timestamp_seconds")
        rules = httpx.get(f"{url}/api/v1/rules", timeout=2).json()["data"]["groups"][0]["rules"]
        assert sorted((rule["name"], rule["health"]) for rule in rules) == [
            ("LivestatusOpenFilesNearLimit", "ok"), ("LivestatusProjectorBehind", "ok"),
            ("LivestatusProjectorNotApplying", "ok")]
        wait_for(lambda: query(url, "livestatus_projector_leader") and "LivestatusProjectorNotApplying" not in alerts(url),
                 10, "a healthy projector raising nothing")

        projector.send_signal(signal.SIGTERM)
        assert projector.wait(15) == 0
        # The scrape fails, the series go stale, absent() holds: the alert is pending (it fires after 2 min).
        wait_for(lambda: alerts(url).get("LivestatusProjectorNotApplying") == "pending", 30,
                 "LivestatusProjectorNotApplying pending once the projector is gone")
        assert query(url, 'up{job="projector"} == 0')
    finally:
        prometheus.terminate()
        prometheus.wait(15)
