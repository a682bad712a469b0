"""The pure planning of the local node's images: what each is made from, its key, what is stale
and why; the machine's pip and apt configuration for the builds; the OCI archive format."""

from __future__ import annotations

import configparser
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from payflow.devstack import images
from payflow.devstack.images import (
    ChartImages,
    DebianImage,
    DockerfileImage,
    GoImage,
    ImageConfig,
)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "payflow"

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE} AS build
COPY requirements/ requirements/
RUN pip install -r requirements/runtime.txt \\
 && echo done
COPY pyproject.toml README.md ./
COPY payflow/ payflow/
FROM ${PYTHON_IMAGE}
COPY --from=build /opt/payflow /opt/payflow
ENTRYPOINT ["payflow-app"]
"""
DOCKERIGNORE = (REPO / ".dockerignore").read_text()


def _chart() -> ChartImages:
    return images.read_chart(CHART)


def _fake_repo(root: Path) -> DockerfileImage:
    files = {
        "Dockerfile.app": DOCKERFILE,
        ".dockerignore": DOCKERIGNORE,
        "requirements/runtime.txt": "fastapi==1\n",
        "pyproject.toml": "[project]\nname = 'x'\n",
        "README.md": "# x\n",
        "payflow/__init__.py": "",
        "payflow/app.py": "print('v1')\n",
        "payflow/__pycache__/app.cpython-311.pyc": "compiled",
        "tests/test_app.py": "def test(): pass\n",
        "docs/notes.md": "notes\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "app").mkdir()
    (root / "payflow" / "linked").symlink_to("../app")
    return DockerfileImage(name="app", tags=("payflow-app:0.1.0",), dockerfile="Dockerfile.app", base="base")


def _key(spec: DockerfileImage, root: Path, base_key: str = "b" * 64) -> str:
    return images.image_key(images.key_material(spec, images.gather_inputs(spec, root), base_key))


# --- keys ---------------------------------------------------------------------------------------


def test_the_app_key_changes_with_what_the_dockerfile_copies_and_nothing_else(tmp_path: Path) -> None:
    spec = _fake_repo(tmp_path)
    key = _key(spec, tmp_path)
    assert _key(spec, tmp_path) == key, "the same inputs give the same key"

    # Files the build never sees: outside the COPY sources, or left out by .dockerignore.
    (tmp_path / "tests" / "test_app.py").write_text("def test(): assert False\n")
    (tmp_path / "docs" / "new.md").write_text("more\n")
    (tmp_path / "payflow" / "__pycache__" / "app.cpython-311.pyc").write_text("recompiled")
    (tmp_path / "payflow" / ".mypy_cache").mkdir()
    (tmp_path / "payflow" / ".mypy_cache" / "x.json").write_text("{}")
    assert _key(spec, tmp_path) == key

    changes: dict[str, Any] = {
        "payflow/app.py": "print('v2')\n",
        "requirements/runtime.txt": "fastapi==2\n",
        "README.md": "# y\n",
        "Dockerfile.app": DOCKERFILE.replace("echo done", "echo built"),
        "payflow/new.py": "x = 1\n",
    }
    seen = {key}
    for name, text in changes.items():
        (tmp_path / name).write_text(text)
        new = _key(spec, tmp_path)
        assert new not in seen, f"changing {name} must change the key"
        seen.add(new)

    (tmp_path / "payflow" / "app.py").chmod(0o755)
    assert _key(spec, tmp_path) not in seen, "a file made executable is a change"
    seen.add(_key(spec, tmp_path))
    (tmp_path / "payflow" / "linked").unlink()
    (tmp_path / "payflow" / "linked").symlink_to("../docs")
    assert _key(spec, tmp_path) not in seen, "a link's target is part of the key"
    assert _key(spec, tmp_path, base_key="c" * 64) != _key(spec, tmp_path), "so is the base image's key"
    assert _key(replace(spec, tags=("payflow-app:0.3.0",)), tmp_path) != _key(spec, tmp_path)


def test_the_real_app_and_operator_keys_are_made_of_the_copied_sources() -> None:
    specs = {s.name: s for s in images.image_specs(_chart())}
    for name in ("app", "operator"):
        spec = specs[name]
        assert isinstance(spec, DockerfileImage)
        material = images.gather_inputs(spec)
        files = {k.removeprefix("file:") for k in material}
        assert {spec.dockerfile, "pyproject.toml", "README.md", "requirements/runtime.txt"} <= files
        assert {"app/main.py", "operator/main.py", "payflow/faults.py", "payflow/app"} <= files
        assert not [f for f in files if f.startswith(("tests/", "helm/", "docs/", ".venv/"))]
        assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
        assert material["file:payflow/app"] == "link:../app"


def test_debian_and_go_keys_follow_their_spec_files_and_toolchain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = {s.name: s for s in images.image_specs(_chart())}
    pg = specs["postgres"]
    assert isinstance(pg, DebianImage)
    inputs = images.gather_inputs(pg)
    assert set(inputs) == {"file:postgres-entrypoint.sh"}
    key = images.image_key(images.key_material(pg, inputs))
    changed = {"file:postgres-entrypoint.sh": "sha256:other"}
    assert images.image_key(images.key_material(pg, changed)) != key
    others: list[DebianImage] = [
        replace(pg, packages=(*pg.packages, "less")),
        replace(pg, suite="trixie"),
        replace(pg, config=replace(pg.config, user="70:70")),
    ]
    for other in others:
        assert images.image_key(images.key_material(other, inputs)) != key

    pause = specs["pause"]
    assert isinstance(pause, GoImage)
    monkeypatch.setattr(images, "_go_version", lambda: "go version go1.26.8 linux/amd64")
    go_inputs = images.gather_inputs(pause)
    assert set(go_inputs) == {"file:payflow/devstack/pause/main.go", "toolchain"}
    monkeypatch.setattr(images, "_go_version", lambda: "go version go1.27.0 linux/amd64")
    assert images.gather_inputs(pause)["toolchain"] != go_inputs["toolchain"]


def test_a_dockerfile_image_needs_its_base_key() -> None:
    spec = DockerfileImage(name="app", tags=(), dockerfile="Dockerfile.app", base="base")
    with pytest.raises(ValueError, match="the key of its base image 'base' is needed"):
        images.key_material(spec, {})


# --- the plan -----------------------------------------------------------------------------------


BASE = DebianImage(name="base", tags=(), packages=("python3",), config=ImageConfig(cmd=("python3",)))
APP = DockerfileImage(name="app", tags=("payflow-app:0.1.0",), dockerfile="Dockerfile.app", base="base")


def test_the_plan_builds_what_has_no_archive_for_its_key_and_says_why(tmp_path: Path) -> None:
    specs = (BASE, APP)
    inputs = {"base": {}, "app": {"file:app/main.py": "sha256:1", "file:Dockerfile.app": "sha256:d"}}
    first = images.plan(specs, inputs, {}, tmp_path)
    assert [(p.name, p.reason) for p in first] == [("base", "never built"), ("app", "never built")]
    assert first[1].archive == tmp_path / f"app-{first[1].key[:16]}.tar"
    assert first[1].material["base"] == first[0].key

    built = {p.name: {p.archive.name: dict(p.material)} for p in first}
    assert not [p for p in images.plan(specs, inputs, built, tmp_path) if p.stale]
    assert all(p.reason == "--force" for p in images.plan(specs, inputs, built, tmp_path, force=True))

    touched = {**inputs, "app": {**inputs["app"], "file:app/main.py": "sha256:2", "file:app/new.py": "x"}}
    again = images.plan(specs, touched, built, tmp_path)
    assert [p.reason for p in again] == [None, "changed: app/main.py; new: app/new.py"]

    rebased = images.plan((replace(BASE, packages=("python3", "less")), APP), inputs, built, tmp_path)
    assert rebased[0].reason == "changed: spec"
    assert rebased[1].reason == "changed: base", "a new base rebuilds what is built on it"


def test_explain_names_what_changed() -> None:
    assert images.explain(None, {"a": "1"}) == "never built"
    old = {f"file:f{i}": "1" for i in range(9)}
    new = {**{k: "2" for k in old}, "file:g": "1"}
    assert images.explain(old, new) == "changed: f0, f1, f2, f3, f4, f5 and 3 more; new: g"
    assert images.explain(new, {"file:g": "1"}).startswith("gone: f0")


def test_select_brings_the_base_along_and_rejects_unknown_names() -> None:
    specs = images.image_specs(_chart())
    assert [s.name for s in images.select(specs, ["app"])] == ["base", "app"]
    assert [s.name for s in images.select(specs, ["pause", "redis"])] == ["pause", "redis"]
    assert len(images.select(specs, [])) == len(specs) == 6
    with pytest.raises(ValueError, match=r"unknown images \['mysql'\]"):
        images.select(specs, ["mysql"])


# --- the chart's names ----------------------------------------------------------------------------


def test_images_carry_the_chart_defaults_names() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    buggy = yaml.safe_load((CHART / "values-buggy.yaml").read_text())
    version = chart["appVersion"]
    names = _chart()
    assert names.app == (f"payflow-app:{version}", f"payflow-app:{buggy['app']['image']['tag']}")
    assert names.operator == (f"payflow-operator:{version}",)
    pg, redis = values["postgresql"], values["redis"]
    assert names.postgres == f"{pg['image']['repository']}:{pg['image']['tag']}"
    assert names.redis == f"{redis['image']['repository']}:{redis['image']['tag']}"
    assert names.postgres.startswith("docker.io/library/postgres:")
    assert (names.postgres_uid, names.redis_uid) == (pg["uid"], redis["uid"])

    specs = {s.name: s for s in images.image_specs(names)}
    assert specs["app"].tags == names.app
    assert specs["pause"].tags == (images.PAUSE_IMAGE,)
    postgres, redis_image = specs["postgres"], specs["redis"]
    assert isinstance(postgres, DebianImage)
    assert isinstance(redis_image, DebianImage)
    major = images.postgres_major(names.postgres)
    assert postgres.packages == (f"postgresql-{major}",)
    assert postgres.config.user == f"{pg['uid']}:{pg['uid']}"
    assert redis_image.config.user == f"{redis['uid']}:{redis['uid']}"
    assert f"postgres:x:{pg['uid']}:{pg['uid']}:" in postgres.essential_hooks[0]


def test_chart_images_from_values() -> None:
    values: dict[str, Any] = {
        "app": {"image": {"repository": "reg.example/payflow-app", "tag": ""}},
        "operator": {"image": {"repository": "payflow-operator", "tag": "9.9"}},
        "postgresql": {"image": {"repository": "postgres", "tag": "16.4"}, "uid": 70},
        "redis": {"image": {"repository": "redis", "tag": "7"}, "uid": 999},
    }
    overlays: list[dict[str, Any]] = [
        {"app": {"image": {"tag": "0.2.0"}}},
        {"app": {"image": {"tag": "1.0.0"}}},
        {"faults": {}},
    ]
    names = images.chart_images({"appVersion": "1.0.0"}, values, overlays)
    assert names.app == ("reg.example/payflow-app:1.0.0", "reg.example/payflow-app:0.2.0")
    assert names.operator == ("payflow-operator:9.9",)
    assert images.postgres_major(names.postgres) == 16
    values["redis"]["image"]["tag"] = ""
    with pytest.raises(ValueError, match=r"redis\.image\.tag is empty"):
        images.chart_images({"appVersion": "1.0.0"}, values)
    with pytest.raises(ValueError, match="major version"):
        images.postgres_major("postgres:latest")


@pytest.mark.parametrize(
    ("ref", "full"),
    [
        ("payflow-app:0.1.0", "docker.io/library/payflow-app:0.1.0"),
        ("docker.io/library/postgres:15.10-bookworm", "docker.io/library/postgres:15.10-bookworm"),
        ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
        ("localhost/payflow/python:3", "localhost/payflow/python:3"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("redis", "docker.io/library/redis:latest"),
    ],
)
def test_names_are_normalised_as_containerd_and_the_kubelet_do(ref: str, full: str) -> None:
    assert images.normalize_ref(ref) == full


# --- the Dockerfile's context ----------------------------------------------------------------------


def test_build_stages_are_the_named_stages_before_the_last() -> None:
    assert images.build_stages(DOCKERFILE) == ("build",)
    assert images.build_stages("FROM a AS deps\nFROM deps as test\nFROM b\n") == ("deps", "test")
    assert images.build_stages("FROM a\nFROM b AS final\n") == ()


def test_copy_sources_are_the_context_paths_copied() -> None:
    assert images.copy_sources(DOCKERFILE) == ("requirements", "pyproject.toml", "README.md", "payflow")
    assert images.copy_sources('COPY ["a b/", "c", "/dst/"]\nADD --chown=1:1 ./x /x\n') == ("a b", "c", "x")
    assert images.copy_sources("COPY . /src\n") == (".",)
    real = images.copy_sources((REPO / "Dockerfile.app").read_text())
    assert real == images.copy_sources((REPO / "Dockerfile.operator").read_text())
    assert set(real) >= {"requirements", "pyproject.toml", "README.md", "payflow", "app", "operator"}
    with pytest.raises(ValueError, match="from a URL"):
        images.copy_sources("ADD https://example.com/x.tgz /x\n")
    with pytest.raises(ValueError, match="outside the build context"):
        images.copy_sources("COPY ../secret /x\n")


def test_dockerignore_as_docker_reads_it() -> None:
    ignored = images.dockerignore(DOCKERIGNORE)
    for kept in (
        "pyproject.toml",
        "README.md",
        "payflow/faults.py",
        "app/main.py",
        "requirements/runtime.txt",
    ):
        assert not ignored(kept), kept
    for gone in (
        "tests/unit/test_x.py",
        ".venv/bin/python",
        "Makefile",
        "payflow/__pycache__/faults.cpython-311.pyc",
        "app/api/__pycache__/deps.cpython-311.pyc",
        "app/x.pyc",
        "payflow/.mypy_cache/x.json",
    ):
        assert ignored(gone), gone
    rules = images.dockerignore("docs/**/*.md\n!docs/keep.md\n/build\nfile?.txt\n[ab].log\n")
    assert ignored("Makefile")
    assert not rules("Makefile")
    assert rules("docs/a/b/c.md")
    assert rules("docs/c.md")
    assert not rules("docs/keep.md")
    assert rules("build/x")
    assert not rules("src/build/x")
    assert rules("file1.txt")
    assert not rules("file10.txt")
    assert rules("a.log")
    assert not rules("c.log")


def test_context_files_keep_only_the_copied_and_not_ignored() -> None:
    files = ["a/x.py", "a/__pycache__/x.pyc", "ab/y.py", "b.txt", "c.txt"]
    ignored = images.dockerignore("**/__pycache__\n")
    assert images.context_files(files, ["a", "b.txt"], ignored) == ("a/x.py", "b.txt")
    assert images.context_files(files, ["."], ignored) == ("a/x.py", "ab/y.py", "b.txt", "c.txt")


# --- the machine's pip and apt configuration --------------------------------------------------------


def test_pip_setup_takes_where_and_how_to_download_and_the_ca(tmp_path: Path) -> None:
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("CERT")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    system = "[global]\nindex-url = https://mirror.corp/simple\nuser = true\ntarget = /x\n"
    user = (
        f"[global]\ntrusted-host = mirror.corp\n[install]\nfind-links = {wheels} /no/such/dir\nno-deps = 1\n"
    )
    env = {"PIP_INDEX_URL": "https://proxy.corp/simple", "PIP_CERT": str(ca), "PIP_REQUIRE_VIRTUALENV": "1"}
    setup = images.pip_setup([system, user], env)
    parsed = configparser.RawConfigParser()
    parsed.read_string(setup.conf)
    conf = {s: dict(parsed.items(s)) for s in parsed.sections()}
    assert conf == {
        "global": {
            "index-url": "https://proxy.corp/simple",  # the environment wins
            "trusted-host": "mirror.corp",
            "cert": images.BUILD_CA_PATH,  # where the build sees the machine's CA bundle
        },
        "install": {"find-links": "/root/find-links/0"},  # where the build sees the machine's wheels
    }
    assert setup.ca_bundle == ca
    assert setup.directories == ((wheels, "/root/find-links/0"),)


def test_pip_setup_falls_back_to_the_system_bundle_or_none() -> None:
    def system_only(path: Path) -> bool:
        return str(path) == images.SYSTEM_CA_BUNDLE

    setup = images.pip_setup([], {"SSL_CERT_FILE": "/nowhere.pem"}, exists=system_only)
    assert setup.ca_bundle == Path(images.SYSTEM_CA_BUNDLE)
    assert "cert = " in setup.conf
    bare = images.pip_setup([], {}, exists=lambda p: False)
    assert bare.ca_bundle is None
    assert "[" not in bare.conf, "nothing to configure"


def test_apt_sources_follow_the_machine_or_debian() -> None:
    deb822 = """\
Types: deb
URIs: http://mirror.corp/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.corp/debian-security
Suites: bookworm-security
Components: main
Enabled: no

Types: deb-src
URIs: http://mirror.corp/debian
Suites: bookworm
Components: main
"""
    oneline = (
        "deb [arch=amd64] http://mirror.corp/other bookworm-security main # security\n"
        "deb http://x trixie main\n"
    )
    signed = "[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
    assert images.apt_sources([deb822, oneline]) == [
        f"deb {signed} http://mirror.corp/debian bookworm main contrib",
        f"deb {signed} http://mirror.corp/debian bookworm-updates main contrib",
        "deb [arch=amd64] http://mirror.corp/other bookworm-security main",
    ]
    fallback = images.apt_sources(["deb http://archive.ubuntu.com/ubuntu noble main\n"])
    assert fallback[0] == "deb http://deb.debian.org/debian bookworm main"
    assert len(fallback) == 3


# --- OCI archives and containerd ---------------------------------------------------------------------


def _layer(path: Path, entries: dict[str, bytes | None]) -> Path:
    """A layer tar: a file per name (None: a directory)."""
    with tarfile.open(path, "w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.uid = info.gid = 999
                tar.addfile(info, io.BytesIO(data))
    return path


def test_an_oci_archive_names_its_image_and_unpacks_with_whiteouts(tmp_path: Path) -> None:
    lower = _layer(
        tmp_path / "l1.tar",
        {"etc": None, "etc/a": b"a", "etc/b": b"b", "opt": None, "opt/old": b"old", "bin": None},
    )
    upper = _layer(tmp_path / "l2.tar", {"etc/.wh.a": b"", "opt/.wh..wh..opq": b"", "opt/new": b"new"})
    config = ImageConfig(entrypoint=("/bin/x",), user="999:999", env=("PATH=/bin",), ports=("1/tcp",))
    archive = tmp_path / "image.tar"
    refs = ["docker.io/library/x:1", "docker.io/library/x:2"]
    digest = images.write_oci_archive(archive, [lower, upper], config, refs, "test")
    assert images.archive_refs(archive) == dict.fromkeys(refs, digest)
    with tarfile.open(archive) as tar:
        assert tar.getnames()[:2] == ["oci-layout", "index.json"]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["platform"] == {"architecture": "amd64", "os": "linux"}
    cfg = images.image_config(archive)
    assert cfg["config"] == {
        "Entrypoint": ["/bin/x"],
        "User": "999:999",
        "Env": ["PATH=/bin"],
        "ExposedPorts": {"1/tcp": {}},
    }
    assert len(cfg["rootfs"]["diff_ids"]) == 2

    root = tmp_path / "rootfs"
    images.unpack(archive, root)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        "bin",
        "etc",
        "etc/b",
        "opt",
        "opt/new",
    ]
    assert (root / "etc" / "b").stat().st_uid == 999


def test_ctr_images_ls_is_read_by_name_and_digest() -> None:
    oci = "application/vnd.oci.image.manifest.v1+json"
    text = (
        f"REF                        TYPE {' ' * 38} DIGEST      SIZE    PLATFORMS   LABELS \n"
        f"registry.k8s.io/pause:3.10 {oci} sha256:abc 1.4 MiB linux/amd64 -\n"
        f"docker.io/library/payflow-app:0.1.0 {oci} sha256:def 90 MiB linux/amd64 -\n"
    )
    assert images.parse_images_ls(text) == {
        "registry.k8s.io/pause:3.10": "sha256:abc",
        "docker.io/library/payflow-app:0.1.0": "sha256:def",
    }
    assert images.parse_images_ls("REF TYPE DIGEST SIZE PLATFORMS LABELS\n") == {}
