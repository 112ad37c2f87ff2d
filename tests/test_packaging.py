"""What ships: the runtime wheel's contents, the lock files against pyproject.toml, the image recipe.

No Docker engine runs here, so the Dockerfile is checked as text (layer order, port, health check,
user, what it copies); `docker build` itself is not exercised by this suite.
"""

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME_PACKAGES = {"api", "projector", "readmodel"}
TEST_ONLY = {"pytest", "mockupdb", "fakeredis", "hypothesis", "schemathesis", "selenium", "atheris", "httpx"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    [built] = out.glob("livestatus-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def test_the_wheel_carries_the_three_runtime_packages_and_nothing_else(wheel):
    names = wheel.namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops - {f"livestatus-{PROJECT['version']}.dist-info"} == RUNTIME_PACKAGES
    # The files they read at run time come along.
    assert {"readmodel/scripts/apply.lua", "readmodel/scripts/sweep.lua", "api/static/panel.html"} <= set(names)
    assert not [name for name in names if re.match(r"(standin|demo|tests|bench|fuzz|scripts)/", name)]


def test_the_wheel_needs_no_test_or_demo_package_at_run_time(wheel):
    [metadata] = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    runtime = [
        Requirement(line.split(":", 1)[1].strip())
        for line in wheel.read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    unconditional = {canonicalize_name(req.name) for req in runtime if req.marker is None}
    assert unconditional and not unconditional & TEST_ONLY
    entry_points = wheel.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    assert "projector = projector.cli:main" in entry_points
    assert "livestatus-api = api.__main__:main" in entry_points


def _pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text()
    return {canonicalize_name(name): version for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", text, re.M)}


def _requirements(extra: str | None = None) -> list[Requirement]:
    lines = PROJECT["dependencies"] if extra is None else PROJECT["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize(("lock", "extra"), [("requirements.lock", None), ("requirements-dev.lock", None),
                                              ("requirements-dev.lock", "dev")])
def test_every_dependency_is_pinned_within_its_range_with_hashes(lock, extra):
    pins = _pins(lock)
    for requirement in _requirements(extra):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in {lock}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"{lock} pins {name}=={pins[name]}, outside {requirement.specifier}: run `make lock`"
    text = (ROOT / lock).read_text()
    blocks = re.split(r"^(?=\S)", text, flags=re.M)
    requirements = [block for block in blocks if block.strip() and not block.startswith("#")]
    assert len(requirements) == len(pins)
    assert all(re.match(r"[A-Za-z0-9_.\-]+(\[[^]]*\])?==", block) and "--hash=sha256:" in block for block in requirements)


def test_the_runtime_lock_has_no_test_tools_and_agrees_with_the_dev_lock():
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    assert not set(runtime) & TEST_ONLY
    assert {name: dev.get(name) for name in runtime} == runtime


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _production_stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage the default (last) stage is built from."""
    stages: dict[str, list[tuple[str, str]]] = {}
    order: list[list[tuple[str, str]]] = []
    for kind, arg in _instructions():
        if kind == "FROM":
            base, _, name = arg.partition(" AS ")
            current = [*stages.get(base.strip(), []), (kind, arg)]
            order.append(current)
            if name:
                stages[name.strip()] = current
        else:
            order[-1].append((kind, arg))
    return order


def test_the_image_installs_the_locked_dependencies_before_it_copies_the_code():
    final = _production_stages()[-1]
    install = next(i for i, (kind, arg) in enumerate(final) if kind == "RUN" and "requirements.lock" in arg)
    assert "--require-hashes" in final[install][1]
    copies = [i for i, (kind, arg) in enumerate(final) if kind == "COPY"]
    assert [final[i][1] for i in copies if i < install] == ["requirements.lock /tmp/requirements.lock"]
    assert any("--from=wheel" in final[i][1] for i in copies if i > install)


def test_the_image_declares_its_port_a_health_check_and_a_user_other_than_root():
    final = _production_stages()[-1]
    kinds = dict(final)
    assert kinds["EXPOSE"].split() == ["8000"]
    assert "/healthz" in kinds["HEALTHCHECK"] and "CMD" in kinds["HEALTHCHECK"]
    user = [arg for kind, arg in final if kind == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")


def test_the_image_copies_only_runtime_code():
    stages = _production_stages()
    wheel_stage = next(stage for stage in stages if stage[0][1].endswith(" AS wheel"))
    copied = {source for stage in (wheel_stage, stages[-1]) for kind, arg in stage
              if kind == "COPY" and "--from" not in arg for source in arg.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "readmodel", "projector", "api", "requirements.lock"}
