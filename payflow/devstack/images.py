"""The local node's container images, built without Docker or a registry.

    payflow-stack images [--force] [--plan] [NAME ...]

Each image is an OCI archive in ``~/.cache/payflow/images/<name>-<key>.tar``, where ``key`` is
a hash of everything the image is made from: an archive whose key is there is not built again.

==========  ======================================================  =============================
image       made from                                               tagged (as the chart names it)
==========  ======================================================  =============================
base        Debian bookworm packages (mmdebstrap --variant=minbase)  localhost/payflow/python:3-
            with python3, python3-venv, ca-certificates              bookworm (stands in for the
                                                                     Dockerfiles' python image)
app         Dockerfile.app on the base (buildah bud, chroot)         payflow-app:<appVersion> and
                                                                     every values-*.yaml app tag
operator    Dockerfile.operator on the base                          payflow-operator:<appVersion>
postgres    Debian's postgresql-<major>, our entrypoint script       the chart's postgresql.image
redis       Debian's redis-server, our entrypoint script             the chart's redis.image
pause       payflow/devstack/pause/main.go (static Go), scratch      registry.k8s.io/pause:3.10
==========  ======================================================  =============================

PostgreSQL and Redis keep the official images' contract as the chart uses it (environment,
user, data directory, command line) and carry the chart's default image names, as an air-gapped
mirror would; the chart's defaults stay the official images.

The planning is pure: what each image is made from (:func:`image_specs`, :func:`copy_sources`,
:func:`context_files`), its key (:func:`key_material`, :func:`image_key`), what is stale and
why (:func:`plan`). The builders (mmdebstrap, buildah, go), the archive writer and the import
into containerd (:func:`import_images`) do the I/O.
"""

from __future__ import annotations

import configparser
import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import yaml

from payflow.devstack import tools
from payflow.devstack.process import Process

# The sandbox image the node's containerd names (its `sandbox_image`).
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
SUITE = "bookworm"
# Bump when the way an image is made changes in a way its inputs do not show.
FORMAT = "1"
# The Dockerfiles' build argument naming their base image.
BASE_ARG = "PYTHON_IMAGE"

DATA_DIR = Path(__file__).with_name("images")
CHART_DIR = tools.REPO_ROOT / "helm" / "payflow"
PLATFORM = {"architecture": "amd64", "os": "linux"}
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"

# Docs, manuals and translations stay out of the Debian images, as in the official slim ones.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
)
# What the package scripts left in /run (mmdebstrap's own cleanup of it comes too late).
CLEAN_RUN = 'find "$1/run" -mindepth 1 -maxdepth 1 ! -name lock -exec rm -rf {} +'
# The options of the machine's pip configuration that say where and how to download, and
# nothing that changes what the Dockerfiles install.
PIP_OPTIONS = frozenset(
    {
        "index-url",
        "extra-index-url",
        "trusted-host",
        "find-links",
        "no-index",
        "cert",
        "client-cert",
        "proxy",
        "timeout",
        "default-timeout",
        "retries",
    }
)
# The home directory of the builds' RUN steps (root's): a directory of ours is mounted there
# with pip's user configuration in it, so that nothing of the machine's lands in an image (a
# mount on a path the image lacks would leave that path behind, empty).
BUILD_HOME = "/root"
BUILD_PIP_CONF = f"{BUILD_HOME}/.config/pip/pip.conf"
BUILD_CA_PATH = f"{BUILD_HOME}/.config/pip/ca.crt"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


class ImageBuildError(RuntimeError):
    """An image could not be built; the message names the step and its log."""


# --- what an image is made from (pure) ---------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an OCI image configuration."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # "NAME=value"
    user: str = ""
    workdir: str = ""
    ports: tuple[str, ...] = ()  # "5432/tcp"
    volumes: tuple[str, ...] = ()
    stop_signal: str = ""
    labels: tuple[tuple[str, str], ...] = ()

    def to_oci(self) -> dict[str, Any]:
        config: dict[str, Any] = {}
        if self.user:
            config["User"] = self.user
        if self.ports:
            config["ExposedPorts"] = {p: {} for p in self.ports}
        if self.env:
            config["Env"] = list(self.env)
        if self.entrypoint:
            config["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            config["Cmd"] = list(self.cmd)
        if self.volumes:
            config["Volumes"] = {v: {} for v in self.volumes}
        if self.workdir:
            config["WorkingDir"] = self.workdir
        if self.labels:
            config["Labels"] = dict(self.labels)
        if self.stop_signal:
            config["StopSignal"] = self.stop_signal
        return config


@dataclass(frozen=True)
class DebianImage:
    """A root filesystem from Debian packages (mmdebstrap), as a single layer.

    ``essential_hooks`` run after the essential packages are installed, before the rest (where
    users and configuration that the packages' scripts must find go); ``customize_hooks`` run
    last. Both are shell commands with the root filesystem in ``$1``; ``$DATA`` is
    payflow/devstack/images. ``files`` are the files of that directory the hooks use."""

    name: str
    tags: tuple[str, ...]
    packages: tuple[str, ...]
    config: ImageConfig
    essential_hooks: tuple[str, ...] = ()
    customize_hooks: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    suite: str = SUITE


@dataclass(frozen=True)
class DockerfileImage:
    """A Dockerfile of the repo built as written (buildah bud), its base image given as an
    archive through ``BASE_ARG``."""

    name: str
    tags: tuple[str, ...]
    dockerfile: str  # relative to the repo
    base: str  # the name of another image


@dataclass(frozen=True)
class GoImage:
    """A static Go program (CGO_ENABLED=0) from a directory of the repo, alone in a ``from
    scratch`` image at ``binary``."""

    name: str
    tags: tuple[str, ...]
    source: str  # a directory of the repo (package main, standard library only)
    binary: str
    config: ImageConfig


ImageSpec = DebianImage | DockerfileImage | GoImage


@dataclass(frozen=True)
class ChartImages:
    """The image names of the chart's defaults, and the users its pods run PostgreSQL and
    Redis as."""

    app: tuple[str, ...]
    operator: tuple[str, ...]
    postgres: str
    postgres_uid: int
    redis: str
    redis_uid: int


def chart_images(
    chart: Mapping[str, Any], values: Mapping[str, Any], overlays: Sequence[Mapping[str, Any]] = ()
) -> ChartImages:
    """The names, from Chart.yaml, values.yaml and the values-*.yaml files: an empty app or
    operator tag means the chart's appVersion; every overlay's app tag is a deploy of its own
    (values-buggy.yaml's 0.2.0)."""
    version = str(chart["appVersion"])

    def image(section: Mapping[str, Any]) -> tuple[str, str]:
        img = section["image"]
        return str(img["repository"]), str(img.get("tag") or "")

    app_repo, app_tag = image(values["app"])
    app_tags = [app_tag or version]
    for overlay in overlays:
        tag = ((overlay.get("app") or {}).get("image") or {}).get("tag")
        if tag and str(tag) not in app_tags:
            app_tags.append(str(tag))
    op_repo, op_tag = image(values["operator"])
    pg_repo, pg_tag = image(values["postgresql"])
    redis_repo, redis_tag = image(values["redis"])
    for what, tag in (("postgresql", pg_tag), ("redis", redis_tag)):
        if not tag:
            raise ValueError(f"the chart's {what}.image.tag is empty: the local image needs a tag")
    return ChartImages(
        app=tuple(f"{app_repo}:{t}" for t in app_tags),
        operator=(f"{op_repo}:{op_tag or version}",),
        postgres=f"{pg_repo}:{pg_tag}",
        postgres_uid=int(values["postgresql"]["uid"]),
        redis=f"{redis_repo}:{redis_tag}",
        redis_uid=int(values["redis"]["uid"]),
    )


def postgres_major(ref: str) -> int:
    """The PostgreSQL major version an image name's tag names: ``postgres:15.10-bookworm``: 15."""
    tag = ref.rpartition(":")[2]
    match = re.match(r"(\d+)", tag)
    if not match or "/" in tag:
        raise ValueError(f"cannot tell the PostgreSQL major version from the image tag of {ref!r}")
    return int(match.group(1))


def _system_user(name: str, uid: int, home: str, shell: str) -> str:
    """An essential hook: the user and group ``name`` with ``uid``, before the package whose
    scripts would otherwise create them with the next free system id."""
    return (
        f'echo "{name}:x:{uid}:{uid}::{home}:{shell}" >> "$1/etc/passwd"'
        f' && echo "{name}:x:{uid}:" >> "$1/etc/group"'
    )


def image_specs(chart: ChartImages) -> tuple[ImageSpec, ...]:
    """Every image, each after the one it is built on."""
    pg_major = postgres_major(chart.postgres)
    pg_bin = f"/usr/lib/postgresql/{pg_major}/bin"
    pg_data = "/var/lib/postgresql/data"
    lang = "LANG=C.UTF-8"
    mirror_of = "org.opencontainers.image.description"
    return (
        GoImage(
            name="pause",
            tags=(PAUSE_IMAGE,),
            source="payflow/devstack/pause",
            binary="/pause",
            # As the upstream pause image: nobody's user, the binary as the entrypoint.
            config=ImageConfig(entrypoint=("/pause",), user="65535:65535"),
        ),
        DebianImage(
            name="base",
            tags=("localhost/payflow/python:3-" + SUITE,),
            packages=("python3", "python3-venv", "ca-certificates"),
            # The Dockerfiles run `python`, as in the official python images.
            customize_hooks=('ln -s /usr/bin/python3 "$1/usr/local/bin/python"',),
            config=ImageConfig(env=(f"PATH={DEFAULT_PATH}", lang), cmd=("python3",)),
        ),
        DockerfileImage(name="app", tags=chart.app, dockerfile="Dockerfile.app", base="base"),
        DockerfileImage(name="operator", tags=chart.operator, dockerfile="Dockerfile.operator", base="base"),
        DebianImage(
            name="postgres",
            tags=(chart.postgres,),
            packages=(f"postgresql-{pg_major}",),
            files=("postgres-entrypoint.sh",),
            essential_hooks=(
                _system_user("postgres", chart.postgres_uid, "/var/lib/postgresql", "/bin/bash"),
                # Only the chart's cluster, made by the entrypoint in PGDATA: no Debian "main".
                'mkdir -p "$1/etc/postgresql-common/createcluster.d"'
                ' && echo "create_main_cluster = false"'
                ' > "$1/etc/postgresql-common/createcluster.d/payflow.conf"',
            ),
            customize_hooks=(
                # As the official image: the server listens on every address of its pod.
                f"sed -ri \"s/^#?(listen_addresses)\\s*=\\s*\\S+.*/\\1 = '*'/\""
                f' "$1/usr/share/postgresql/{pg_major}/postgresql.conf.sample"',
                f'install -d -o {chart.postgres_uid} -g {chart.postgres_uid} -m 1777 "$1{pg_data}"',
                # The socket directory, as in the official image (the builder empties /run first).
                f'install -d -o {chart.postgres_uid} -g {chart.postgres_uid} -m 3777 "$1/run/postgresql"',
                'install -m 0755 "$DATA/postgres-entrypoint.sh" "$1/usr/local/bin/docker-entrypoint.sh"',
            ),
            config=ImageConfig(
                entrypoint=("docker-entrypoint.sh",),
                cmd=("postgres",),
                # The versioned binaries first: pg_isready and psql without Debian's wrapper.
                env=(f"PATH={pg_bin}:{DEFAULT_PATH}", f"PG_MAJOR={pg_major}", f"PGDATA={pg_data}", lang),
                user=f"{chart.postgres_uid}:{chart.postgres_uid}",
                ports=("5432/tcp",),
                volumes=(pg_data,),
                stop_signal="SIGINT",
                labels=((mirror_of, f"PostgreSQL {pg_major} from Debian {SUITE}, as {chart.postgres}"),),
            ),
        ),
        DebianImage(
            name="redis",
            tags=(chart.redis,),
            packages=("redis-server",),
            files=("redis-entrypoint.sh",),
            essential_hooks=(_system_user("redis", chart.redis_uid, "/var/lib/redis", "/usr/sbin/nologin"),),
            customize_hooks=(
                f'install -d -o {chart.redis_uid} -g {chart.redis_uid} -m 0755 "$1/data"',
                'install -m 0755 "$DATA/redis-entrypoint.sh" "$1/usr/local/bin/docker-entrypoint.sh"',
            ),
            config=ImageConfig(
                entrypoint=("docker-entrypoint.sh",),
                cmd=("redis-server",),
                env=(f"PATH={DEFAULT_PATH}", lang),
                user=f"{chart.redis_uid}:{chart.redis_uid}",
                workdir="/data",
                ports=("6379/tcp",),
                volumes=("/data",),
                labels=((mirror_of, f"Redis from Debian {SUITE}, as {chart.redis}"),),
            ),
        ),
    )


def normalize_ref(ref: str) -> str:
    """The full name containerd (and the kubelet) give an image name:
    ``payflow-app:0.1.0`` is ``docker.io/library/payflow-app:0.1.0``."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:  # no tag: that colon was a registry's port
        name, tag = ref, "latest"
    if not name or not tag:
        raise ValueError(f"not an image name: {ref!r}")
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    return f"{name}:{tag}"


# --- the build context of a Dockerfile (pure) ---------------------------------------------


def _instructions(dockerfile: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined."""
    logical = ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        word, _, rest = logical.partition(" ")
        yield word.upper(), rest.strip()
        logical = ""
    if logical:
        word, _, rest = logical.partition(" ")
        yield word.upper(), rest.strip()


def copy_sources(dockerfile: str) -> tuple[str, ...]:
    """The paths of the build context that COPY and ADD take (not ``COPY --from``), in order,
    normalised (``payflow/`` is ``payflow``; ``./`` or ``.`` is the whole context)."""
    sources: list[str] = []
    for word, rest in _instructions(dockerfile):
        if word not in ("COPY", "ADD"):
            continue
        args = [str(a) for a in json.loads(rest)] if rest.startswith("[") else shlex.split(rest)
        flags = [a for a in args if a.startswith("--")]
        paths = [a for a in args if not a.startswith("--")]
        if any(f.startswith("--from") for f in flags) or len(paths) < 2:
            continue
        for src in paths[:-1]:
            if re.match(r"[a-z]+://", src):
                raise ValueError(f"{word} from a URL ({src}) cannot be keyed by the repo's files")
            norm = os.path.normpath(src.lstrip("/")) if src.strip("/") else "."
            if norm.startswith(".."):
                raise ValueError(f"{word} {src}: outside the build context")
            if norm not in sources:
                sources.append(norm)
    return tuple(sources)


def build_stages(dockerfile: str) -> tuple[str, ...]:
    """The named stages a Dockerfile builds before its last one (``FROM x AS build``)."""
    stages = []
    for word, rest in _instructions(dockerfile):
        if word == "FROM":
            m = re.search(r"\s[Aa][Ss]\s+(\S+)\s*$", rest)
            stages.append(m.group(1) if m else "")
    return tuple(s for s in stages[:-1] if s)


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus ``**``) as a regular expression."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def dockerignore(text: str) -> Callable[[str], bool]:
    """Whether a path of the context is left out by these .dockerignore rules: the last rule
    that matches the path or one of its parent directories wins; ``!`` rules bring back."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if keep else line).lstrip("/")
        rules.append((keep, _pattern_regex(pattern)))

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for keep, regex in rules:
            if any(regex.match(p) for p in prefixes):
                result = not keep
        return result

    return ignored


def context_files(
    files: Iterable[str], sources: Sequence[str], ignored: Callable[[str], bool]
) -> tuple[str, ...]:
    """The files of the build context (paths relative to it) that the COPY ``sources`` take."""
    whole = "." in sources
    picked = {
        f
        for f in files
        if (whole or any(f == s or f.startswith(s + "/") for s in sources)) and not ignored(f)
    }
    return tuple(sorted(picked))


# --- keys and the plan (pure) ---------------------------------------------------------------


def spec_fields(spec: ImageSpec) -> str:
    """The spec as canonical JSON: part of what the key is made of."""
    return json.dumps({"kind": type(spec).__name__, **asdict(spec)}, sort_keys=True)


def key_material(spec: ImageSpec, inputs: Mapping[str, str], base_key: str | None = None) -> dict[str, str]:
    """Everything an image's key is made of, by name: the spec, each input file's digest
    (``file:<path>``), the toolchain, the base image's key. Changing any of them changes the
    key; nothing else does."""
    material = {"format": FORMAT, "spec": spec_fields(spec), **inputs}
    if isinstance(spec, DockerfileImage):
        if base_key is None:
            raise ValueError(f"{spec.name}: the key of its base image {spec.base!r} is needed")
        material["base"] = base_key
    return material


def image_key(material: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(material), sort_keys=True).encode()).hexdigest()


def explain(old: Mapping[str, str] | None, new: Mapping[str, str]) -> str:
    """Why an image must be built: what changed since the last archive of it."""
    if old is None:
        return "never built"
    changed = sorted(k for k in new.keys() & old.keys() if new[k] != old[k])
    added = sorted(new.keys() - old.keys())
    removed = sorted(old.keys() - new.keys())

    def names(keys: list[str]) -> str:
        shown = [k.removeprefix("file:") for k in keys[:6]]
        return ", ".join(shown) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")

    parts = [
        f"{label}: {names(keys)}"
        for label, keys in (("changed", changed), ("new", added), ("gone", removed))
        if keys
    ]
    return "; ".join(parts) or "inputs differ"


@dataclass(frozen=True)
class PlannedImage:
    spec: ImageSpec
    key: str
    material: Mapping[str, str]
    archive: Path
    reason: str | None  # None: the archive for this key exists

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stale(self) -> bool:
        return self.reason is not None


def archive_name(name: str, key: str) -> str:
    return f"{name}-{key[:16]}.tar"


def plan(
    specs: Sequence[ImageSpec],
    inputs: Mapping[str, Mapping[str, str]],
    built: Mapping[str, Mapping[str, Mapping[str, str]]],
    cache_dir: Path,
    force: bool = False,
) -> list[PlannedImage]:
    """Each image's key, archive and whether (and why) it must be built.

    ``inputs``: each image's input digests; ``built``: for each name, the key material of each
    archive there is, newest last (from their ``.json`` beside them)."""
    keys: dict[str, str] = {}
    planned = []
    for spec in specs:
        base = keys.get(spec.base) if isinstance(spec, DockerfileImage) else None
        material = key_material(spec, inputs[spec.name], base)
        key = keys[spec.name] = image_key(material)
        archives = built.get(spec.name, {})
        if force:
            reason: str | None = "--force"
        elif archive_name(spec.name, key) in archives:
            reason = None
        else:
            reason = explain(list(archives.values())[-1] if archives else None, material)
        planned.append(PlannedImage(spec, key, material, cache_dir / archive_name(spec.name, key), reason))
    return planned


def select(specs: Sequence[ImageSpec], names: Sequence[str]) -> tuple[ImageSpec, ...]:
    """The images named, with the images they are built on; all of them for no names."""
    by_name = {s.name: s for s in specs}
    if unknown := sorted(set(names) - set(by_name)):
        raise ValueError(f"unknown images {unknown}; known: {', '.join(by_name)}")
    wanted = set(names or by_name)
    for name in list(wanted):
        spec = by_name[name]
        if isinstance(spec, DockerfileImage):
            wanted.add(spec.base)
    return tuple(s for s in specs if s.name in wanted)


# --- the machine's pip configuration, for the builds (pure) -----------------------------------


@dataclass(frozen=True)
class PipSetup:
    """What the image builds get of the machine's pip configuration: ``conf``, the pip.conf
    they read (:data:`BUILD_PIP_CONF`), the CA bundle pip must trust (seen at
    :data:`BUILD_CA_PATH`) and the local directories of wheels it names (host path, path in
    the build)."""

    conf: str
    ca_bundle: Path | None
    directories: tuple[tuple[Path, str], ...] = ()


def pip_setup(
    configs: Sequence[str], env: Mapping[str, str], exists: Callable[[Path], bool] = Path.exists
) -> PipSetup:
    """Merge the machine's pip configuration files (``configs``, in pip's order: global, user,
    PIP_CONFIG_FILE) and its ``PIP_*`` environment, keeping only :data:`PIP_OPTIONS`; the CA
    bundle is pip's ``cert`` (PIP_CERT included), else REQUESTS_CA_BUNDLE, SSL_CERT_FILE, or
    the system's bundle."""
    merged: dict[str, dict[str, str]] = {}
    for text in configs:
        parser = configparser.RawConfigParser()
        parser.read_string(text)
        for section in parser.sections():
            for key, value in parser.items(section):
                if key.replace("_", "-") in PIP_OPTIONS:
                    merged.setdefault(section, {})[key.replace("_", "-")] = value
    for var, value in env.items():
        key = var.removeprefix("PIP_").lower().replace("_", "-")
        if var.startswith("PIP_") and key in PIP_OPTIONS:
            for section in {"global", *merged}:  # the environment wins over every file
                if section == "global" or key in merged[section]:
                    merged.setdefault(section, {})[key] = value
    cert = merged.get("global", {}).get("cert")
    candidates = [cert, env.get("REQUESTS_CA_BUNDLE"), env.get("SSL_CERT_FILE"), SYSTEM_CA_BUNDLE]
    ca = next((Path(c) for c in candidates if c and exists(Path(c))), None)
    directories: dict[Path, str] = {}
    for options in merged.values():
        options.pop("cert", None)  # the build's is set below, if there is one
        options.pop("client-cert", None)  # a key of the machine's own; not for builds
        if links := options.get("find-links"):
            kept = []
            for link in links.split():
                if not link.startswith(("/", "file://")):
                    kept.append(link)  # a URL
                elif exists(path := Path(link.removeprefix("file://"))):
                    inside = directories.setdefault(path, f"{BUILD_HOME}/find-links/{len(directories)}")
                    kept.append(inside)
            if kept:
                options["find-links"] = " ".join(kept)
            else:
                del options["find-links"]
    if ca is not None:
        merged.setdefault("global", {})["cert"] = BUILD_CA_PATH
    out = io.StringIO()
    out.write("# The machine's pip configuration, for the image build (payflow-stack images).\n")
    for section in sorted(merged, key=lambda s: (s != "global", s)):
        if merged[section]:
            out.write(f"[{section}]\n")
            out.writelines(f"{k} = {v}\n" for k, v in sorted(merged[section].items()))
    return PipSetup(conf=out.getvalue(), ca_bundle=ca, directories=tuple(directories.items()))


def apt_sources(texts: Sequence[str], suite: str = SUITE) -> list[str]:
    """One-line sources (``deb [signed-by=...] URI SUITE COMPONENTS``) for ``suite``, its
    -updates and -security, from the machine's apt sources (one-line or deb822 texts); Debian's
    own mirrors when the machine has none for that suite."""
    wanted = (suite, f"{suite}-updates", f"{suite}-security")
    lines: list[str] = []
    for text in texts:
        if re.search(r"^\s*Types:", text, re.MULTILINE):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                last = ""
                for line in stanza.splitlines():
                    if line.startswith("#") or not line.strip():
                        continue
                    if line[0].isspace() and last:  # a continuation (an inline key)
                        continue
                    name, _, value = line.partition(":")
                    last = name.strip().lower()
                    fields[last] = value.strip()
                if "deb" not in fields.get("types", "").split() or fields.get("enabled") == "no":
                    continue
                signed = fields.get("signed-by", "")
                opts = f"[signed-by={signed}] " if signed.startswith("/") else ""
                for uri in fields.get("uris", "").split():
                    for s in fields.get("suites", "").split():
                        if s in wanted:
                            lines.append(f"deb {opts}{uri} {s} {fields.get('components', 'main')}")
        else:
            for raw in text.splitlines():
                line = raw.split("#", 1)[0].strip()
                m = re.match(r"deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)", line)
                if m and m.group(3) in wanted:
                    lines.append(f"deb {m.group(1) or ''}{m.group(2)} {m.group(3)} {m.group(4)}")
    if not any(f" {suite} " in line for line in lines):
        lines = [
            f"deb http://deb.debian.org/debian {suite} main",
            f"deb http://deb.debian.org/debian {suite}-updates main",
            f"deb http://deb.debian.org/debian-security {suite}-security main",
        ]
    return list(dict.fromkeys(lines))


# --- OCI archives -------------------------------------------------------------------------


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return f"sha256:{h.hexdigest()}", size


def _tar_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _index(manifest: Mapping[str, Any], refs: Sequence[str]) -> dict[str, Any]:
    """An OCI index naming one manifest once per reference, as ``ctr images import`` reads it."""
    return {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {**manifest, "annotations": {NAME_ANNOTATION: ref, REF_ANNOTATION: ref}} for ref in refs
        ],
    }


def write_oci_archive(
    dest: Path, layers: Sequence[Path], config: ImageConfig, refs: Sequence[str], created_by: str
) -> str:
    """An OCI archive of one image (uncompressed ``layers``, each a tar), named ``refs``; the
    digest of its manifest."""
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    blobs = [(_sha256_file(p), p) for p in layers]
    image_config = {
        "created": created,
        **PLATFORM,
        "config": config.to_oci(),
        "rootfs": {"type": "layers", "diff_ids": [d for (d, _), _ in blobs]},
        "history": [{"created": created, "created_by": created_by}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_digest = f"sha256:{hashlib.sha256(config_bytes).hexdigest()}"
    manifest_bytes = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": d, "size": s} for (d, s), _ in blobs],
        },
        sort_keys=True,
    ).encode()
    manifest_digest = f"sha256:{hashlib.sha256(manifest_bytes).hexdigest()}"
    manifest = {
        "mediaType": MEDIA_MANIFEST,
        "digest": manifest_digest,
        "size": len(manifest_bytes),
        "platform": PLATFORM,
    }
    now = time.time()
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _tar_bytes(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}', now)
        _tar_bytes(tar, "index.json", json.dumps(_index(manifest, refs), indent=2).encode(), now)
        _tar_bytes(tar, f"blobs/sha256/{manifest_digest[7:]}", manifest_bytes, now)
        _tar_bytes(tar, f"blobs/sha256/{config_digest[7:]}", config_bytes, now)
        for (digest, _), path in blobs:
            tar.add(str(path), arcname=f"blobs/sha256/{digest[7:]}", recursive=False)
    tmp.replace(dest)
    return manifest_digest


def oci_layout_to_archive(layout: Path, dest: Path, refs: Sequence[str]) -> str:
    """An OCI archive of the single image in an OCI layout directory (``buildah push oci:``),
    named ``refs``; the digest of its manifest."""
    index = json.loads((layout / "index.json").read_text())
    manifests = index["manifests"]
    if len(manifests) != 1:
        raise ImageBuildError(f"{layout}: {len(manifests)} manifests, expected one")
    m = manifests[0]
    manifest = {"mediaType": m["mediaType"], "digest": m["digest"], "size": m["size"], "platform": PLATFORM}
    now = time.time()
    tmp = dest.with_name(dest.name + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _tar_bytes(tar, "oci-layout", (layout / "oci-layout").read_bytes(), now)
        _tar_bytes(tar, "index.json", json.dumps(_index(manifest, refs), indent=2).encode(), now)
        for blob in sorted((layout / "blobs" / "sha256").iterdir()):
            tar.add(str(blob), arcname=f"blobs/sha256/{blob.name}", recursive=False)
    tmp.replace(dest)
    return str(m["digest"])


@contextlib.contextmanager
def _open_archive(archive: Path) -> Iterator[tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]]:
    """An archive and its members by name."""
    with tarfile.open(archive) as tar:
        yield tar, {m.name.removeprefix("./"): m for m in tar.getmembers()}


def _read_json(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Any:
    f = tar.extractfile(member)
    if f is None:
        raise ImageBuildError(f"{member.name}: not a file")
    return json.load(f)


def archive_refs(archive: Path) -> dict[str, str]:
    """The image names of an OCI archive and the manifest digest each points at."""
    with tarfile.open(archive) as tar:
        for member in tar:  # index.json comes first in the archives written here
            if member.name.removeprefix("./") == "index.json":
                index = _read_json(tar, member)
                return {
                    m["annotations"][NAME_ANNOTATION]: m["digest"]
                    for m in index["manifests"]
                    if NAME_ANNOTATION in m.get("annotations", {})
                }
    raise ImageBuildError(f"{archive}: no index.json (not an OCI archive)")


def _manifest(tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo]) -> dict[str, Any]:
    index = _read_json(tar, members["index.json"])
    digest = index["manifests"][0]["digest"]
    return dict(_read_json(tar, members[f"blobs/sha256/{digest.removeprefix('sha256:')}"]))


def image_config(archive: Path) -> dict[str, Any]:
    """The OCI image configuration of an archive's (first) image."""
    with _open_archive(archive) as (tar, members):
        manifest = _manifest(tar, members)
        digest = manifest["config"]["digest"].removeprefix("sha256:")
        return dict(_read_json(tar, members[f"blobs/sha256/{digest}"]))


def unpack(archive: Path, dest: Path) -> None:
    """The root filesystem of an archive's image, layer by layer into ``dest`` (as root: the
    owners are the image's), whiteouts applied. For tests and for looking inside an image."""
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with _open_archive(archive) as (tar, members):
        for layer in _manifest(tar, members)["layers"]:
            blob = tar.extractfile(members[f"blobs/sha256/{layer['digest'].removeprefix('sha256:')}"])
            if blob is None:
                raise ImageBuildError(f"{archive}: layer {layer['digest']} missing")
            with tarfile.open(fileobj=blob, mode="r|*") as layer_tar:
                _apply_layer(layer_tar, root)


def _apply_layer(layer: tarfile.TarFile, root: Path) -> None:
    for member in layer:
        name = os.path.normpath(member.name.lstrip("/")).removeprefix("./")
        if name in (".", "") or name.startswith(".."):
            continue
        target = root / name
        parent, base = target.parent, target.name
        if not parent.resolve().is_relative_to(root):
            raise ImageBuildError(f"layer member {member.name!r} escapes the root filesystem")
        if base == ".wh..wh..opq":  # an opaque directory: what lower layers put there goes
            for child in parent.iterdir():
                _remove(child)
            continue
        if base.startswith(".wh."):
            _remove(parent / base.removeprefix(".wh."))
            continue
        if member.isdev():
            continue  # the runtime provides /dev
        if target.is_symlink() or (target.exists() and not (member.isdir() and target.is_dir())):
            _remove(target)
        member.name = name
        if member.islnk():
            member.linkname = os.path.normpath(member.linkname.lstrip("/")).removeprefix("./")
        layer.extract(member, path=str(root), set_attrs=True, numeric_owner=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# --- gathering the inputs (I/O) ---------------------------------------------------------------


def file_digest(path: Path) -> str:
    """A file's digest for a key: a symbolic link by its target, a file by its content and
    whether it is executable."""
    if path.is_symlink():
        return "link:" + os.readlink(path)
    digest, _ = _sha256_file(path)
    return digest + (":x" if os.access(path, os.X_OK) else "")


def _walk(root: Path, rel: str) -> Iterator[str]:
    """Paths (relative to ``root``) of the files and links at or under ``rel``; links to
    directories are not followed (COPY copies the link)."""
    top = root / rel if rel != "." else root
    if top.is_symlink() or top.is_file():
        yield rel
        return
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        for d in list(dirnames):
            if (here / d).is_symlink():
                dirnames.remove(d)
                filenames.append(d)
        for f in filenames:
            yield (here / f).relative_to(root).as_posix()


def gather_inputs(spec: ImageSpec, repo: Path = tools.REPO_ROOT) -> dict[str, str]:
    """The digests of the files an image is made from, by ``file:<path>`` (and the Go
    toolchain's version for a Go image)."""
    if isinstance(spec, DockerfileImage):
        dockerfile = (repo / spec.dockerfile).read_text()
        ignore_file = repo / ".dockerignore"
        ignored = dockerignore(ignore_file.read_text() if ignore_file.exists() else "")
        sources = copy_sources(dockerfile)
        for src in sources:
            if not (repo / src).exists() and not (repo / src).is_symlink():
                raise ImageBuildError(f"{spec.dockerfile}: COPY {src}: not in {repo}")
        found = (f for src in sources for f in _walk(repo, src))
        files = [spec.dockerfile, *context_files(found, sources, ignored)]
        if ignore_file.exists():
            files.append(".dockerignore")
        return {f"file:{f}": file_digest(repo / f) for f in files}
    if isinstance(spec, DebianImage):
        return {f"file:{f}": file_digest(DATA_DIR / f) for f in spec.files}
    source = repo / spec.source
    go_files = sorted(p for p in source.iterdir() if p.suffix == ".go" and not p.name.endswith("_test.go"))
    if not go_files:
        raise ImageBuildError(f"{spec.source}: no Go files")
    inputs = {f"file:{p.relative_to(repo).as_posix()}": file_digest(p) for p in go_files}
    inputs["toolchain"] = _go_version()
    return inputs


def _go() -> str:
    go = shutil.which("go") or next((str(p) for p in [Path("/usr/local/go/bin/go")] if p.exists()), None)
    if go is None:
        raise tools.ToolMissingError("go not found on PATH (the pause image is built with the machine's Go)")
    return go


def _go_env() -> dict[str, str]:
    return {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "", "GO111MODULE": "off"}


def _go_version() -> str:
    out = subprocess.run([_go(), "version"], capture_output=True, text=True, env=_go_env(), timeout=60)
    if out.returncode != 0:
        raise ImageBuildError(f"go version failed: {out.stderr.strip()}")
    return out.stdout.strip()


def read_chart(chart_dir: Path = CHART_DIR) -> ChartImages:
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    overlays = [yaml.safe_load(p.read_text()) or {} for p in sorted(chart_dir.glob("values-*.yaml"))]
    return chart_images(chart, values, overlays)


def cache_dir() -> Path:
    return tools.cache_root() / "images"


def built_archives(directory: Path) -> dict[str, dict[str, dict[str, str]]]:
    """For each image name, the key material of each archive in ``directory``, oldest first."""
    records = []
    for meta in directory.glob("*.json"):
        try:
            record = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        archive = directory / str(record.get("archive", ""))
        if archive.is_file() and "name" in record and "material" in record:
            records.append((float(record.get("built_at", 0)), record))
    out: dict[str, dict[str, dict[str, str]]] = {}
    for _, record in sorted(records, key=lambda r: r[0]):
        out.setdefault(record["name"], {})[record["archive"]] = dict(record["material"])
    return out


def current_plan(
    names: Sequence[str] = (), force: bool = False, directory: Path | None = None
) -> list[PlannedImage]:
    """What would be built now, and why (stale key); builds nothing."""
    specs = select(image_specs(read_chart()), names)
    directory = directory or cache_dir()
    inputs = {s.name: gather_inputs(s) for s in specs}
    return plan(specs, inputs, built_archives(directory), directory, force)


# --- building (I/O) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    name: str
    tags: tuple[str, ...]  # as the chart names them; ``refs`` as containerd does
    archive: Path
    key: str
    seconds: float
    cached: bool
    digest: str = ""  # the manifest's

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(normalize_ref(t) for t in self.tags)


@dataclass
class Builder:
    """Builds planned images into ``directory``; each step's time goes to ``log``."""

    directory: Path
    log: Callable[[str], None] = print
    keep: int = 2  # archives kept per image: this one and the one before
    t0: float = field(default_factory=time.monotonic)

    @property
    def buildah_root(self) -> Path:
        return tools.cache_root() / "buildah"

    def step(self, message: str) -> None:
        self.log(f"[{time.monotonic() - self.t0:6.1f}s] {message}")

    def run(
        self, name: str, argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
    ) -> None:
        """Run a build command (its output in the image's log); fail with the log's tail."""
        log_path = self.directory / "logs" / f"{name}.log"
        with log_path.open("a") as f:
            f.write(f"\n$ {shlex.join(argv)}\n")
        proc = Process(name=f"image-{name}", argv=list(argv), log_path=log_path, env=env)
        proc.start()
        assert proc.popen is not None
        try:
            code = proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.stop()
            raise ImageBuildError(
                f"{name}: {argv[0]} still running after {timeout:.0f}s; see {log_path}"
            ) from None
        except BaseException:
            proc.stop()
            raise
        proc.stop(timeout=1)
        if code != 0:
            raise ImageBuildError(
                f"{name}: {Path(argv[0]).name} {' '.join(argv[1:3])} ... failed (exit {code}); "
                f"log {log_path}:\n{proc.log_tail(30)}"
            )

    def build(self, item: PlannedImage, archives: Mapping[str, Path]) -> str:
        """Build one image into ``item.archive``; the manifest digest."""
        spec = item.spec
        work = Path(tempfile.mkdtemp(prefix=f"{spec.name}-", dir=self.directory / "tmp"))
        try:
            refs = [normalize_ref(t) for t in spec.tags]
            if isinstance(spec, GoImage):
                return self._build_go(spec, work, item.archive, refs)
            if isinstance(spec, DebianImage):
                return self._build_debian(spec, work, item.archive, refs)
            return self._build_dockerfile(spec, work, item.archive, refs, archives[spec.base])
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _build_go(self, spec: GoImage, work: Path, dest: Path, refs: Sequence[str]) -> str:
        binary = work / "out" / spec.binary.lstrip("/")
        binary.parent.mkdir(parents=True)
        source = tools.REPO_ROOT / spec.source
        go_files = sorted(str(p) for p in source.glob("*.go") if not p.name.endswith("_test.go"))
        flags = ["-trimpath", "-ldflags=-s -w -buildid="]
        self.run(spec.name, [_go(), "build", *flags, "-o", str(binary), *go_files], 300, env=_go_env())
        layer = work / "layer.tar"
        with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
            info = tar.gettarinfo(str(binary), arcname=spec.binary.lstrip("/"))
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with binary.open("rb") as f:
                tar.addfile(info, f)
        self.step(f"{spec.name}: {spec.source} built ({binary.stat().st_size // 1024} KiB, static)")
        return write_oci_archive(dest, [layer], spec.config, refs, f"go build {spec.source}")

    def _build_debian(self, spec: DebianImage, work: Path, dest: Path, refs: Sequence[str]) -> str:
        rootfs = work / "rootfs.tar"
        argv = [
            "unshare",  # the chroot's /proc, /sys and /dev mounts vanish with it, even on SIGKILL
            "--mount",
            "--propagation",
            "private",
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            "--format=tar",
            # Merged /usr without the usrmerge package (and the perl it pulls in).
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            # /run is emptied by the first customize hook instead, so that the spec's hooks may
            # put directories there (PostgreSQL's socket directory).
            "--skip=cleanup/run",
            "--dpkgopt=force-unsafe-io",
            *(f"--dpkgopt={o}" for o in DPKG_EXCLUDES),
            *(f"--aptopt={o}" for o in _apt_proxy_options()),
            f"--include={','.join(spec.packages)}",
            *(f"--essential-hook={h}" for h in spec.essential_hooks),
            *(f"--customize-hook={h}" for h in (CLEAN_RUN, *spec.customize_hooks)),
            spec.suite,
            str(rootfs),
            *apt_sources(_machine_apt_sources(), spec.suite),
        ]
        env = {**os.environ, "DATA": str(DATA_DIR), "TMPDIR": str(work)}
        t = time.monotonic()
        self.run(spec.name, argv, 1200, env=env)
        self.step(
            f"{spec.name}: mmdebstrap {spec.suite} ({', '.join(spec.packages)}) "
            f"in {time.monotonic() - t:.1f}s"
        )
        layer = work / "layer.tar"
        _rootfs_layer(rootfs, layer)
        rootfs.unlink()
        return write_oci_archive(dest, [layer], spec.config, refs, f"mmdebstrap {spec.suite} {spec.packages}")

    def buildah(self, *args: str) -> list[str]:
        """The buildah command line with the cache's own storage (not /var/lib/containers)."""
        root = self.buildah_root
        return [
            "buildah",
            "--root",
            str(root / "root"),
            "--runroot",
            str(root / "runroot"),
            "--storage-driver",
            "overlay",
            *args,
        ]

    def _build_dockerfile(
        self, spec: DockerfileImage, work: Path, dest: Path, refs: Sequence[str], base: Path
    ) -> str:
        self._clean_buildah_containers()
        dockerfile = tools.REPO_ROOT / spec.dockerfile
        home = work / "home"
        pip = machine_pip_setup()
        conf = home / BUILD_PIP_CONF.removeprefix(BUILD_HOME + "/")
        conf.parent.mkdir(parents=True)
        conf.write_text(pip.conf)
        if pip.ca_bundle is not None:
            shutil.copyfile(pip.ca_bundle, home / BUILD_CA_PATH.removeprefix(BUILD_HOME + "/"))
        mounts = [f"--volume={home}:{BUILD_HOME}"]
        for host, inside in pip.directories:
            (home / inside.removeprefix(BUILD_HOME + "/")).mkdir(parents=True)
            mounts.append(f"--volume={host}:{inside}:ro")
        local = f"localhost/payflow-build/{spec.name}"
        common = [
            "--isolation=chroot",
            "--network=host",
            "--layers",  # a change of the app's code reuses the dependency layers
            f"--build-arg={BASE_ARG}=oci-archive:{base}",
            *mounts,
            f"--file={dockerfile}",
        ]
        # Every stage tagged: what a build uses is never pruned as dangling (_prune_buildah).
        targets = [(f"--target={st}", f"{local}-{st}:latest") for st in build_stages(dockerfile.read_text())]
        for target, tag in [*targets, ("", f"{local}:latest")]:
            t = time.monotonic()
            bud = self.buildah("bud", *common, *([target] if target else []), f"--tag={tag}")
            bud.append(str(tools.REPO_ROOT))
            self.run(spec.name, ["unshare", "--mount", "--propagation", "private", *bud], 1800)
            what = f"stage {target.removeprefix('--target=')}" if target else "image"
            self.step(f"{spec.name}: buildah bud {spec.dockerfile} ({what}) in {time.monotonic() - t:.1f}s")
        layout = work / "layout"
        push = self.buildah(
            "push", "--format=oci", "--disable-compression", f"{local}:latest", f"oci:{layout}"
        )
        self.run(spec.name, push, 600)
        digest = oci_layout_to_archive(layout, dest, refs)
        self._prune_buildah()
        return digest

    def _clean_buildah_containers(self) -> None:
        """Working containers a killed build left in the cache's storage."""
        out = subprocess.run(
            self.buildah("containers", "--quiet"), capture_output=True, text=True, timeout=60
        )
        if ids := out.stdout.split():
            subprocess.run(self.buildah("rm", *ids), capture_output=True, timeout=120)

    def _prune_buildah(self) -> None:
        """The layers only an older build used: every image is tagged ``:latest`` of its name, so
        what is left untagged and childless is stale. Pruned until none is."""
        for _ in range(50):
            out = subprocess.run(
                self.buildah("images", "--quiet", "--filter", "dangling=true"),
                capture_output=True,
                text=True,
                timeout=60,
            )
            ids = out.stdout.split()
            if not ids:
                return
            subprocess.run(self.buildah("rmi", *ids), capture_output=True, timeout=300)

    def record(self, item: PlannedImage, digest: str, seconds: float) -> None:
        meta = item.archive.with_suffix(".json")
        meta.write_text(
            json.dumps(
                {
                    "name": item.name,
                    "archive": item.archive.name,
                    "key": item.key,
                    "tags": list(item.spec.tags),
                    "refs": [normalize_ref(t) for t in item.spec.tags],
                    "digest": digest,
                    "seconds": round(seconds, 1),
                    "built_at": time.time(),
                    "material": dict(item.material),
                },
                indent=2,
            )
        )
        older = sorted(
            (p for p in self.directory.glob(f"{item.name}-*.json") if p != meta),
            key=lambda p: p.stat().st_mtime,
        )
        for stale in older[: max(0, len(older) - (self.keep - 1))]:
            with contextlib.suppress(OSError):
                stale.with_suffix(".tar").unlink()
            with contextlib.suppress(OSError):
                stale.unlink()


def _rootfs_layer(rootfs: Path, layer: Path) -> None:
    """mmdebstrap's tarball as an image layer: without the device nodes it made in /dev (the
    runtime provides /dev)."""
    with tarfile.open(rootfs, "r|") as src, tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            if member.isdev():
                continue
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)


def _machine_apt_sources() -> list[str]:
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if path.suffix in (".list", ".sources") or path.name == "sources.list":
            with contextlib.suppress(OSError):
                texts.append(path.read_text())
    return texts


def _apt_proxy_options() -> list[str]:
    """The machine's apt proxies (Acquire::http::Proxy ...), for mmdebstrap's apt."""
    options = []
    for key in ("Acquire::http::Proxy", "Acquire::https::Proxy"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["apt-config", "shell", "V", key], capture_output=True, text=True, timeout=10
            ).stdout
            if m := re.match(r"V='(.*)'", out.strip()):
                options.append(f'{key} "{m.group(1)}"')
    return options


def machine_pip_setup() -> PipSetup:
    """The machine's pip configuration (files in pip's order, then PIP_* variables)."""
    env = os.environ
    paths = [Path("/etc/xdg/pip/pip.conf"), Path("/etc/pip.conf")]
    home = Path.home()
    paths += [
        home / ".pip" / "pip.conf",
        Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "pip" / "pip.conf",
    ]
    if env.get("PIP_CONFIG_FILE") and env["PIP_CONFIG_FILE"] != os.devnull:
        paths.append(Path(env["PIP_CONFIG_FILE"]))
    if env.get("PIP_CONFIG_FILE") == os.devnull:
        paths = []
    texts = []
    for p in paths:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            texts.append(p.read_text())
    return pip_setup(texts, env)


@contextlib.contextmanager
def _locked(directory: Path, log: Callable[[str], None]) -> Iterator[None]:
    """One build at a time in a cache directory."""
    with (directory / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build of the images in {directory} to end")
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def preflight() -> None:
    missing = [t for t in ("mmdebstrap", "buildah", "unshare") if shutil.which(t) is None]
    if missing:
        raise tools.ToolMissingError(
            f"{', '.join(missing)} not found: `apt-get install mmdebstrap buildah` (make tools installs them)"
        )
    if os.geteuid() != 0:
        raise ImageBuildError(
            "building the node's images needs root (mmdebstrap, buildah --isolation chroot)"
        )


def build_all(
    force: bool = False,
    names: Sequence[str] = (),
    log: Callable[[str], None] = print,
    directory: Path | None = None,
) -> list[BuiltImage]:
    """Build every stale image (``names``: only those, with their bases); all of them with
    ``force``. Each image's archive, key, and whether it was cached."""
    directory = directory or cache_dir()
    for sub in ("logs", "tmp"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    builder = Builder(directory, log)
    with _locked(directory, log):
        for leftover in (directory / "tmp").iterdir():  # of a killed build
            _remove(leftover)
        planned = current_plan(names, force, directory)
        if any(p.stale for p in planned):
            preflight()
        builder.step(f"{len(planned)} images, {sum(p.stale for p in planned)} to build")
        results: list[BuiltImage] = []
        archives: dict[str, Path] = {}
        for item in planned:
            t = time.monotonic()
            if item.stale:
                builder.step(f"{item.name}: building ({item.reason})")
                digest = builder.build(item, archives)
                seconds = time.monotonic() - t
                builder.record(item, digest, seconds)
                size = item.archive.stat().st_size / 2**20
                builder.step(f"{item.name}: built in {seconds:.1f}s, {size:.0f} MiB, {item.archive}")
            else:
                digest = _recorded_digest(item.archive)
                seconds = time.monotonic() - t
                builder.step(f"{item.name}: cached {item.archive.name}")
            archives[item.name] = item.archive
            results.append(
                BuiltImage(item.name, item.spec.tags, item.archive, item.key, seconds, not item.stale, digest)
            )
        return results


def _recorded_digest(archive: Path) -> str:
    with contextlib.suppress(OSError, ValueError, KeyError):
        return str(json.loads(archive.with_suffix(".json").read_text())["digest"])
    return next(iter(archive_refs(archive).values()), "")


# --- into the node's containerd (I/O) ----------------------------------------------------------


def present_images(ctr: Sequence[str], namespace: str = "k8s.io") -> dict[str, str]:
    """The images containerd has in ``namespace``: name to the digest its target has."""
    out = subprocess.run([*ctr, "-n", namespace, "images", "ls"], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ImageBuildError(f"{shlex.join(ctr)} images ls failed: {out.stderr.strip()}")
    return parse_images_ls(out.stdout)


def parse_images_ls(text: str) -> dict[str, str]:
    """``ctr images ls``: REF TYPE DIGEST SIZE PLATFORMS LABELS, one image a line."""
    images = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3 and fields[2].startswith("sha256:"):
            images[fields[0]] = fields[2]
    return images


def import_images(
    archives: Sequence[Path],
    ctr: Sequence[str],
    namespace: str = "k8s.io",
    log: Callable[[str], None] = print,
) -> list[str]:
    """Import each archive into containerd (``ctr`` is the command line up to its
    subcommand, e.g. ``["nsenter", "-t", pid, "-m", "-n", "ctr", "--address", sock]``),
    unless every name in it is already there with the same digest. The names imported."""
    present = present_images(ctr, namespace)
    imported: list[str] = []
    for archive in archives:
        refs = archive_refs(archive)
        if refs and all(present.get(ref) == digest for ref, digest in refs.items()):
            continue
        t = time.monotonic()
        out = subprocess.run(
            [*ctr, "-n", namespace, "images", "import", "--all-platforms", str(archive)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if out.returncode != 0:
            raise ImageBuildError(f"importing {archive.name} failed: {(out.stderr or out.stdout).strip()}")
        log(f"imported {', '.join(refs)} from {archive.name} in {time.monotonic() - t:.1f}s")
        imported.extend(refs)
    return imported


# --- the command (``payflow-stack images``) ------------------------------------------------------


def print_table(images: Sequence[BuiltImage], out: IO[str] = sys.stdout) -> None:
    out.write(f"{'IMAGE':<10}{'KEY':<18}{'STATE':<9}{'SECONDS':>8}  TAGS\n")
    for i in images:
        state = "cached" if i.cached else "built"
        out.write(f"{i.name:<10}{i.key[:16]:<18}{state:<9}{i.seconds:>8.1f}  {' '.join(i.tags)}\n")


def main(names: Sequence[str] = (), force: bool = False, plan_only: bool = False) -> int:
    t0 = time.monotonic()
    try:
        if plan_only:
            for p in current_plan(names, force):
                state = f"build: {p.reason}" if p.stale else "cached"
                print(f"{p.name:<10}{p.key[:16]:<18}{state}\n{'':<10}{p.archive}")
            return 0
        images = build_all(force=force, names=names)
    except (ImageBuildError, tools.ToolMissingError, ValueError) as exc:
        print(f"images: {exc}", file=sys.stderr)
        return 1
    print()
    print_table(images)
    print(f"\nall images ready in {time.monotonic() - t0:.1f}s, in {cache_dir()}")
    return 0
