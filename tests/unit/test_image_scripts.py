"""Every console script the chart's pods run starts from what the images install, and nothing else.

For each interpreter an image may be built on (Debian bookworm's python3 3.11.2, the base of the
local node's images, and this machine's own Python 3.11), a virtualenv is made the way the
Dockerfiles make ``/opt/payflow``: the runtime lock with ``--require-hashes --only-binary=:all:``,
the build lock, then the project from the files the Dockerfiles copy, ``--no-deps
--no-build-isolation``. Each command of the rendered chart then runs with ``--help``, and every
module the project installs (the local stack's tooling aside) is imported there.

The virtualenv is cached outside the repo, keyed by the two locks and the interpreter
(``~/.cache/payflow/lockcheck-<python>-<hash>``): a warm run downloads and installs nothing, and
reinstalls the project only when its files changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from payflow.devstack import tools
from tests.unit.helm.chart import ALL_OPTIONS, REPO, pod_specs, render

LOCKS = (REPO / "requirements" / "runtime.txt", REPO / "requirements" / "build.txt")
DOCKERFILES = {"app": REPO / "Dockerfile.app", "operator": REPO / "Dockerfile.operator"}
DEBIAN_PYTHON = Path("/usr/bin/python3")
# What .dockerignore keeps out of the build context inside the copied folders.
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")
# Dev tooling, not part of what the images are for (it needs the devstack extra).
NOT_IN_IMAGES = ("payflow.devstack",)
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


@dataclass(frozen=True)
class Interpreter:
    path: Path
    version: str  # the full version, e.g. 3.11.2

    @property
    def tag(self) -> str:
        return f"py{self.version}"


def _interpreter(path: Path) -> Interpreter:
    out = subprocess.run(
        [str(path), "-I", "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return Interpreter(path, out.stdout.strip())


INTERPRETERS = {
    "debian-python3": DEBIAN_PYTHON,
    # The interpreter the dev venv was made from (3.11.7 here), not the venv itself.
    "dev-python": Path(getattr(sys, "_base_executable", sys.executable)),
}


def _clean_env(venv: Path | None = None) -> dict[str, str]:
    """The machine's environment (its pip configuration too), without anything that would let
    the repo, the dev venv or a PayFlow setting leak into the image's environment."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "KUBECONFIG"}
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("PAYFLOW_", "INJECT_"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        shown = " ".join(map(str, argv))
        raise AssertionError(
            f"{shown} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc.stdout


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def _copy_instructions() -> list[tuple[list[str], str]]:
    """The build stage's ``COPY <sources...> <dest>`` lines (the same in both Dockerfiles)."""
    found = {}
    for name, path in DOCKERFILES.items():
        build = path.read_text().split("\nFROM ")[1]
        found[name] = [
            (line.split()[1:-1], line.split()[-1])
            for line in build.splitlines()
            if line.startswith("COPY ") and "--from" not in line
        ]
    assert found["app"] == found["operator"], "both images install the same project: the same COPY lines"
    assert found["app"], "the build stage copies the sources"
    return found["app"]


def _project_files() -> list[tuple[Path, Path]]:
    """(source in the repo, destination in the build directory) of every file the images copy."""
    pairs: list[tuple[Path, Path]] = []
    for sources, dest in _copy_instructions():
        for src in sources:
            origin = REPO / src
            if origin.is_dir():
                for root, dirs, files in os.walk(origin, followlinks=False):
                    here = Path(root)
                    ignored_names = IGNORED(root, [*dirs, *files])
                    dirs[:] = [d for d in dirs if d not in ignored_names]
                    for f in files:
                        if f not in ignored_names:
                            pairs.append((here / f, Path(dest) / (here / f).relative_to(origin)))
                    for d in dirs:  # symbolic links to folders are copied as links
                        if (here / d).is_symlink():
                            pairs.append((here / d, Path(dest) / (here / d).relative_to(origin)))
            else:
                pairs.append((origin, Path(dest) / origin.name if dest.endswith("/") else Path(dest)))
    return pairs


def _lay_out(pairs: list[tuple[Path, Path]], into: Path) -> None:
    for src, dest in pairs:
        target = into / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)


def _project_digest(pairs: list[tuple[Path, Path]]) -> str:
    parts: list[bytes] = []
    for src, dest in sorted(pairs, key=lambda p: str(p[1])):
        parts.append(str(dest).encode())
        parts.append(os.readlink(src).encode() if src.is_symlink() else src.read_bytes())
    return _digest(*parts)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prune(root: Path, interp: Interpreter, keep: Path) -> None:
    """Older lock checks of the same interpreter (another lock's), unless one is in use."""
    for old in root.glob(f"lockcheck-{interp.tag}-*"):
        if old == keep or old.suffix == ".lock" or not old.is_dir():
            continue
        lock = old.with_name(old.name + ".lock")
        with lock.open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(old, ignore_errors=True)
        lock.unlink(missing_ok=True)


def _build_dependencies(interp: Interpreter, venv: Path, work: Path) -> None:
    """The Dockerfiles' dependency step: a venv, then both locks, wheels only, hashes checked."""
    shutil.rmtree(venv, ignore_errors=True)
    env = _clean_env()
    venv_made = subprocess.run(
        [str(interp.path), "-I", "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300
    )
    assert venv_made.returncode == 0, (
        f"{interp.path} -m venv failed (Debian: apt-get install python3-venv; make tools does):\n"
        f"{venv_made.stderr}"
    )
    pip: list[str | Path] = [venv / "bin" / "python", "-m", "pip", "install", "--require-hashes"]
    pip.append("--only-binary=:all:")
    _run([*pip, "-r", LOCKS[0]], work, env)
    _run([*pip, "-r", LOCKS[1]], work, env)


def _install_project(venv: Path, pairs: list[tuple[Path, Path]], work: Path) -> None:
    src = work / "src"
    _lay_out(pairs, src)
    python = venv / "bin" / "python"
    _run(
        [python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--force-reinstall", "."],
        src,
        _clean_env(),
    )
    _run([python, "-m", "pip", "check"], work, _clean_env())


@cache
def image_venv(name: str) -> Path:
    """The cached virtualenv of interpreter ``name``, with the current project installed."""
    path = INTERPRETERS[name]
    assert path.exists(), f"{path} is missing: Debian's python3 with python3-venv (make tools installs it)"
    interp = _interpreter(path)
    assert interp.version.startswith("3.11."), (
        f"{interp.path} is Python {interp.version}, the images use 3.11"
    )
    root = tools.cache_root()
    key = _digest(
        *(lock.read_bytes() for lock in LOCKS), str(interp.path.resolve()).encode(), interp.version.encode()
    )
    venv = root / f"lockcheck-{interp.tag}-{key}"
    pairs = _project_files()
    project = _project_digest(pairs)
    with (
        _locked(venv.with_name(venv.name + ".lock")),
        tempfile.TemporaryDirectory(prefix="payflow-lockcheck-") as tmp,
    ):
        work = Path(tmp)
        complete = venv / ".dependencies-installed"
        if not complete.exists():
            _build_dependencies(interp, venv, work)
            complete.touch()
        stamp = venv / ".project-digest"
        if not stamp.exists() or stamp.read_text() != project:
            stamp.unlink(missing_ok=True)
            _install_project(venv, pairs, work)
            stamp.write_text(project)
    _prune(root, interp, venv)
    return venv


@cache
def chart_commands() -> frozenset[tuple[str, ...]]:
    """What the chart's pods run from the PayFlow images: a console script and its subcommand
    (``payflow-operator cleanup``), the image's entry point where a container gives no command."""
    entrypoints = {}
    for name, path in DOCKERFILES.items():
        found = re.search(r'^ENTRYPOINT \["([^"]+)"', path.read_text(), re.MULTILINE)
        assert found, f"{path.name} has an ENTRYPOINT"
        entrypoints[name] = found.group(1)
    commands: set[tuple[str, ...]] = set()
    for _, spec in pod_specs(render(values=ALL_OPTIONS)):
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            image = container["image"].rsplit(":", 1)[0].rsplit("/", 1)[-1]
            if image not in {"payflow-app", "payflow-operator"}:
                continue
            argv = [*(container.get("command") or [entrypoints[image.removeprefix("payflow-")]])]
            argv += container.get("args") or []
            sub = tuple(argv[1:2]) if len(argv) > 1 and not argv[1].startswith("-") else ()
            commands.add((argv[0], *sub))
    return frozenset(commands)


def test_the_chart_runs_the_projects_scripts_and_python() -> None:
    commands = chart_commands()
    assert {
        ("payflow-app",),
        ("payflow-operator",),
        ("payflow-operator", "cleanup"),
        ("payflow-loadgen",),
    } <= commands
    for command in commands:
        assert command[0] in SCRIPTS or command[0] == "python", (
            f"the chart runs {command[0]}: not in the image"
        )


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_every_chart_command_starts_from_the_lock_alone(interpreter: str, tmp_path: Path) -> None:
    venv = image_venv(interpreter)
    env = _clean_env(venv)
    for command in sorted(chart_commands()):
        if command[0] == "python":  # the helm test pod's script: the interpreter, stdlib only
            assert (venv / "bin" / "python").exists()
            continue
        out = _run([venv / "bin" / command[0], *command[1:], "--help"], tmp_path, env, timeout=60)
        usage = f"usage: {' '.join(command)}"
        assert out.startswith(usage), f"{' '.join(command)} --help printed:\n{out}"
    # The entry points' modules import their dependencies lazily: import every module as well.
    probe = (
        "import importlib, importlib.metadata as md\n"
        "names = sorted({str(f.with_suffix('')).replace('/', '.').removesuffix('.__init__')\n"
        "    for f in md.files('payflow') if f.suffix == '.py'})\n"
        f"skip = {NOT_IN_IMAGES!r}\n"
        "names = [n for n in names if n.startswith('payflow') and not n.startswith(skip)]\n"
        "for n in names:\n"
        "    importlib.import_module(n)\n"
        "print(len(names))\n"
    )
    imported = int(_run([venv / "bin" / "python", "-I", "-c", probe], tmp_path, env, timeout=120))
    assert imported > 30, f"only {imported} modules found in the installed project"
