"""The images' inputs: the lock file covers pyproject.toml, and both Dockerfiles keep the rules
(pinned base, hashed wheels only, non-root numeric user, the right entry point). They cannot be
built here (no Docker engine); `make images` builds them."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.unit.helm.chart import REPO

LOCKS = {"runtime": REPO / "requirements" / "runtime.txt", "build": REPO / "requirements" / "build.txt"}
DOCKERFILES = {"Dockerfile.app": "payflow-app", "Dockerfile.operator": "payflow-operator"}


def _pins(lock: str) -> dict[str, str]:
    text = LOCKS[lock].read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", text, re.MULTILINE))
    return {canonicalize_name(name): version for name, version in pins.items()}


def test_the_runtime_lock_pins_every_dependency_of_pyproject_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _pins("runtime")
    for raw in project["dependencies"]:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements/runtime.txt: regenerate it (docs/helm.md)"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} vs {req.specifier}"
        )
    # uvicorn[standard] and psycopg[binary] bring their extras' packages.
    assert {"uvloop", "httptools", "psycopg-binary"} <= set(pins)


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_carries_hashes(lock: str) -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCKS[lock].read_text())
    entries = [b for b in blocks if "==" in b.splitlines()[0]]
    assert entries
    for entry in entries:
        assert "--hash=sha256:" in entry, entry.splitlines()[0]
    assert "--find-links" not in LOCKS[lock].read_text()


def test_the_build_lock_pins_the_build_backend() -> None:
    backend = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    pins = _pins("build")
    for raw in backend:
        req = Requirement(raw)
        assert req.specifier.contains(pins[canonicalize_name(req.name)])


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_dockerfile_keeps_the_rules(dockerfile: str) -> None:
    text = (REPO / dockerfile).read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base, "the base image is one ARG"
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base.group(1)), "a slim Python 3.11 base pinned by tag"
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert stages == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"], "multi-stage: build, then the final image"
    build, final = text.split("\nFROM ${PYTHON_IMAGE}\n")
    assert "--require-hashes" in build
    assert "--only-binary=:all:" in build  # wheels only: no compiler needed, none installed
    assert "apt-get" not in text
    assert "COPY --from=build /opt/payflow /opt/payflow" in final
    user = re.findall(r"^USER (\S+)$", final, re.MULTILINE)
    assert user == ["10001:10001"], "a numeric non-root user, so runAsNonRoot can be checked"
    assert re.search(rf'^ENTRYPOINT \["{DOCKERFILES[dockerfile]}"\]$', final, re.MULTILINE)


def test_the_build_context_holds_only_the_sources() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "README.md", "requirements", "payflow", "app", "operator"} <= allowed
    assert not {".venv", ".git", "tests", ".payflow"} & allowed
