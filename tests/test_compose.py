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


def test_the_api_reads_its_secrets_from_files_not_from_the_environment():
    api = SERVICES["api"]
    assert not {"API_KEYS", "AUTH_SECRET"} & set(api["environment"])
    for name in api["secrets"]:
        assert api["environment"][f"{name.upper()}_FILE"] == f"/run/secrets/{name}"
        assert COMPOSE["secrets"][name]["file"].startswith("./secrets/")
    assert "secrets/" in (ROOT / ".gitignore").read_text().split()


def test_the_api_is_published_on_loopback_unless_told_otherwise_with_raised_open_files():
    api = SERVICES["api"]
    [port] = api["ports"]
    assert _defaults(port).startswith("127.0.0.1:")
    assert api["ulimits"]["nofile"]["soft"] >= 65536 and api["ulimits"]["nofile"]["hard"] >= 65536


def test_the_api_health_check_is_liveness_not_readiness():
    probe = " ".join(SERVICES["api"]["healthcheck"]["test"])
    assert "/healthz" in probe and "/readyz" not in probe


def _defaults(text: str) -> str:
    """``text`` with each ``${VAR:-default}`` as its default and ``${VAR}`` empty."""
    return re.sub(r"\$\{[A-Z_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", text)


def _service_env(name: str, secrets_dir: Path) -> dict[str, str]:
    env = {key: _defaults(str(value)) for key, value in SERVICES[name]["environment"].items()}
    return {key: value.replace("/run/secrets/", f"{secrets_dir}/") for key, value in env.items()}


def test_the_example_stack_passes_both_processes_own_validation(tmp_path):
    """scripts/make-secrets writes what compose mounts; the API's and the projector's settings
    code, fed compose's environment with those files, accept it (the old example keys did not)."""
    secrets_dir = tmp_path / "secrets"
    subprocess.run(["bash", str(ROOT / "scripts" / "make-secrets")], env={"PATH": "/usr/bin:/bin",
                   "SECRETS_DIR": str(secrets_dir)}, check=True, capture_output=True, timeout=30)
    assert {p.name for p in secrets_dir.iterdir()} == set(SERVICES["api"]["secrets"])

    from api.settings import Settings as ApiSettings
    from projector.settings import Settings as ProjectorSettings

    api = ApiSettings.from_env(_service_env("api", secrets_dir))
    api.check_secure()
    assert len(api.api_keys) == 1 and len(api.api_keys[0]) >= 32 and len(api.auth_secret or "") >= 32
    projector = ProjectorSettings.from_env(_service_env("projector", secrets_dir))
    assert projector.store == api.store
    assert projector.mongo_url == "mongodb://mongo:27017/?replicaSet=rs0"


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
