"""compose.yaml cannot run here (no Docker engine); check what can be checked without one."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
BIN = Path(sys.executable).parent


def test_stack_has_mongo_redis_projector_api_and_an_opt_in_simulator():
    assert {"mongo", "redis", "projector", "api", "simulator"} <= set(SERVICES)
    assert SERVICES["simulator"]["profiles"] == ["simulator"]


@pytest.mark.parametrize("name", ["mongo", "redis", "projector", "api"])
def test_every_service_has_a_healthcheck(name):
    assert SERVICES[name]["healthcheck"]["test"]


@pytest.mark.parametrize("name", ["projector", "api", "simulator"])
def test_dependencies_wait_for_healthy_services(name):
    depends = SERVICES[name]["depends_on"]
    for dependency, condition in depends.items():
        assert condition == {"condition": "service_healthy"}
        assert "healthcheck" in SERVICES[dependency]


def test_mongo_is_a_replica_set_matching_the_connection_url():
    command = SERVICES["mongo"]["command"]
    replica_set = command[command.index("--replSet") + 1]
    assert f"replicaSet={replica_set}" in SERVICES["projector"]["environment"]["MONGO_URL"]
    assert "rs.initiate" in " ".join(SERVICES["mongo"]["healthcheck"]["test"])


def test_secrets_are_required_variables():
    text = (ROOT / "compose.yaml").read_text()
    for name in ("API_KEYS", "AUTH_SECRET"):
        assert re.search(rf"\$\{{{name}:\?[^}}]+\}}", text), f"{name} must be ${{{name}:?...}}"


def _commands():
    for name, service in SERVICES.items():
        if service.get("build"):
            yield name, service["command"]
            test = service.get("healthcheck", {}).get("test", [])
            if test[:1] == ["CMD"]:
                yield name, test[1:]


@pytest.mark.parametrize(("service", "command"), list(_commands()), ids=lambda v: v if isinstance(v, str) else None)
def test_commands_the_stack_runs_exist_in_this_project(service, command):
    program, *args = command
    if program == "python":
        if args[0] == "-m":
            argv = [sys.executable, "-m", args[1], "--help"]
        else:
            return  # inline `python -c` health probe: standard library only
    else:
        assert program in SCRIPTS, f"{program} is not a console script in pyproject.toml"
        flags = [a for a in args if not a.startswith("-") and not a.isdigit() and "." not in a][:1]
        argv = [str(BIN / program), *flags, "--help"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in (a for a in args if a.startswith("--")):
        assert flag in result.stdout, f"{' '.join(argv)} does not offer {flag}"


def test_dockerfile_copies_only_what_exists():
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_dockerfile_copies_every_package_the_install_needs():
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    copied = {line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")}
    assert set(packages) <= copied, set(packages) - copied
