"""The runtime lock is current with pyproject.toml and holds on every Python 3.11.x an image uses.

``make lock`` resolves it universally, so a dependency that only some 3.11 releases need stays in
it under its marker: redis needs ``async-timeout`` below 3.11.3, and Debian bookworm's python3,
the base of the local node's images, is 3.11.2. (tests/unit/test_image_scripts.py installs it
on both interpreters; these checks are the fast, pure part.)
"""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from dataclasses import dataclass

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from tests.unit.helm.chart import REPO

RUNTIME = REPO / "requirements" / "runtime.txt"
BUILD = REPO / "requirements" / "build.txt"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# Debian bookworm's python3, the official image's (Dockerfile.app's ARG) and either side of 3.11.3.
PYTHONS = ("3.11.2", "3.11.14")


@dataclass(frozen=True)
class Pin:
    name: NormalizedName
    version: str
    marker: Marker | None

    def applies(self, env: dict[str, str]) -> bool:
        return self.marker is None or self.marker.evaluate(env)


def pins(text: str) -> dict[NormalizedName, Pin]:
    found: dict[NormalizedName, Pin] = {}
    for name, version, marker in re.findall(
        r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)(?:\s*;\s*([^\\\n]+?))?\s*\\?$", text, re.MULTILINE
    ):
        pin = Pin(canonicalize_name(name), version, Marker(marker) if marker else None)
        assert pin.name not in found, f"{name} is pinned twice"
        found[pin.name] = pin
    return found


def linux_cpython(full_version: str) -> dict[str, str]:
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env.update(
        python_full_version=full_version,
        python_version=".".join(full_version.split(".")[:2]),
        implementation_name="cpython",
        platform_python_implementation="CPython",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine="x86_64",
        os_name="posix",
    )
    return env


def test_the_locks_come_from_make_lock_resolved_universally() -> None:
    for lock in (RUNTIME, BUILD):
        assert "make lock" in "".join(lock.read_text().splitlines(keepends=True)[:3]), (
            f"{lock.name}: regenerate it with make lock"
        )
    recipe = (REPO / "Makefile").read_text()
    flags = re.search(r"^LOCK_FLAGS := (.*?)(?<!\\)$", recipe, re.MULTILINE | re.DOTALL)
    assert flags, "the Makefile's lock target has its flags in LOCK_FLAGS"
    for flag in ("--universal", "--generate-hashes", "--python-version 3.11", "--only-binary :all:"):
        assert flag in flags.group(1)


def test_every_runtime_dependency_is_locked_and_no_dev_only_one() -> None:
    locked = pins(RUNTIME.read_text())
    runtime = {canonicalize_name(Requirement(r).name) for r in PROJECT["dependencies"]}
    missing = runtime - set(locked)
    assert not missing, f"not in requirements/runtime.txt: {sorted(missing)}; run make lock"
    extras = PROJECT["optional-dependencies"]
    dev_only = (
        {canonicalize_name(Requirement(r).name) for group in extras.values() for r in group}
        - runtime
        - {canonicalize_name(PROJECT["name"])}
    )
    assert dev_only, "the dev extras name packages"
    leaked = dev_only & set(locked)
    assert not leaked, f"dev-only packages in the runtime lock: {sorted(leaked)}; run make lock"


@pytest.mark.parametrize("python", PYTHONS)
def test_the_lock_is_closed_under_the_dependencies_on(python: str) -> None:
    """Every requirement of every locked package that applies on ``python`` is locked for it.

    On 3.11.2 that includes redis's ``async-timeout``. The packages' metadata comes from the dev
    venv, for each package whose version there is the locked one (today all of them); the
    image-scripts test installs the lock for real on both interpreters."""
    env = linux_cpython(python)
    locked = pins(RUNTIME.read_text())
    todo: list[tuple[NormalizedName, frozenset[str]]] = []
    for raw in PROJECT["dependencies"]:
        req = Requirement(raw)
        todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    seen: set[tuple[NormalizedName, frozenset[str]]] = set()
    checked = 0
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        pin = locked.get(name)
        assert pin is not None, f"{name} is needed on Python {python} and not locked: run make lock"
        assert pin.applies(env), f"{name} is needed on Python {python}, its marker excludes it: {pin.marker}"
        try:
            if md.version(name) != pin.version:
                continue
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        checked += 1
        for raw in requires:
            req = Requirement(raw)
            if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": extra}) for extra in (extras or {""})
            ):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    assert checked >= len(PROJECT["dependencies"]), f"only {checked} packages' metadata could be read"
