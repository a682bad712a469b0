"""The local node's images, built for real (mmdebstrap, buildah, go) and looked into.

The first run builds every image (minutes); later runs find them cached by the hash of their
inputs (``payflow-stack images``). Each archive's configuration is what the chart relies on; the
app's console scripts start from the image alone; the PostgreSQL and Redis images start with
the environment and command line the chart gives them (in a chroot of the unpacked image, on a
free loopback port); the pause image stops on SIGTERM; and the archives import into a private
containerd under the names the kubelet looks for, once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from payflow.devstack import images
from payflow.devstack.process import Process, free_port
from tests.support import wait_for
from tests.unit.helm.chart import ALL_OPTIONS, pod_specs, render

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(3600)]

CHART = images.read_chart()
# The console scripts are run from the image alone: nothing of the host's environment.
RUN_SH = """
root=$1 user=$2 dir=$3; shift 3
mount --rbind /dev "$root/dev" && mount -t proc proc "$root/proc" || exit 97
exec chroot --userspec="$user" "$root" /bin/sh -c 'cd "$0" && exec "$@"' "$dir" "$@"
"""


@pytest.fixture(scope="module")
def built() -> dict[str, images.BuiltImage]:
    t0 = time.monotonic()
    result = images.build_all()
    print(f"images ready in {time.monotonic() - t0:.1f}s")
    return {b.name: b for b in result}


@pytest.fixture(scope="module")
def rootfs(built: dict[str, images.BuiltImage]) -> Iterator[dict[str, Path]]:
    """Each image unpacked (the app's, the operator's, PostgreSQL's, Redis's), removed after."""
    top = Path(tempfile.mkdtemp(prefix="payflow-images-"))
    try:
        roots = {}
        for name in ("app", "operator", "postgres", "redis"):
            images.unpack(built[name].archive, top / name)
            roots[name] = top / name
        yield roots
    finally:
        assert not _mounts_under(top), "every mount of the chroots went with their namespace"
        shutil.rmtree(top)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve())
    return [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(prefix)
    ]


def _config(image: images.BuiltImage) -> dict[str, Any]:
    return dict(images.image_config(image.archive)["config"])


def _env(config: Mapping[str, Any], **extra: str) -> dict[str, str]:
    env = dict(e.split("=", 1) for e in config.get("Env", []))
    return {**env, **extra}


def _in_image(
    root: Path, config: Mapping[str, Any], argv: Sequence[str], user: str | None = None
) -> list[str]:
    """``argv`` run in a chroot of ``root`` as the image's user, in its working directory, with
    /dev and /proc mounted in a mount namespace of its own (gone when it ends)."""
    who = user or config.get("User") or "0:0"
    where = config.get("WorkingDir") or "/"
    unshare = shutil.which("unshare") or "unshare"
    return [
        unshare,
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        RUN_SH,
        "sh",
        str(root),
        who,
        where,
        *argv,
    ]


def _run(
    root: Path, config: Mapping[str, Any], argv: Sequence[str], **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _in_image(root, config, argv), env=_env(config, **env), capture_output=True, text=True, timeout=120
    )


@contextlib.contextmanager
def _server(
    name: str,
    root: Path,
    config: Mapping[str, Any],
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str],
    user: str | None = None,
) -> Iterator[Process]:
    proc = Process(name=name, argv=_in_image(root, config, argv, user), log_path=log, env=_env(config, **env))
    proc.start()
    try:
        yield proc
    finally:
        stop = signal.Signals[config.get("StopSignal") or "SIGTERM"]
        proc.stop(timeout=30, sig=stop)


# --- what each archive says ---------------------------------------------------------------------


def test_each_image_carries_the_chart_default_names(built: dict[str, images.BuiltImage]) -> None:
    expected = {
        "app": CHART.app,
        "operator": CHART.operator,
        "postgres": (CHART.postgres,),
        "redis": (CHART.redis,),
        "pause": (images.PAUSE_IMAGE,),
    }
    for name, tags in expected.items():
        image = built[name]
        assert image.tags == tags
        assert image.archive.is_file()
        assert image.archive.name == f"{name}-{image.key[:16]}.tar"
        refs = images.archive_refs(image.archive)
        assert refs == dict.fromkeys([images.normalize_ref(t) for t in tags], image.digest), name
    assert images.archive_refs(built["app"].archive).keys() == {
        "docker.io/library/payflow-app:0.1.0",
        "docker.io/library/payflow-app:0.2.0",
    }


def test_the_payflow_images_run_as_10001_with_their_entrypoint(built: dict[str, images.BuiltImage]) -> None:
    for name, entrypoint in (("app", "payflow-app"), ("operator", "payflow-operator")):
        config = _config(built[name])
        assert config["User"] == "10001:10001"
        assert config["Entrypoint"] == [entrypoint]
        env = _env(config)
        assert env["PATH"].startswith("/opt/payflow/bin:")
        assert env["PYTHONUNBUFFERED"] == "1"
        assert config["WorkingDir"] == "/tmp"


def test_postgres_and_redis_keep_the_official_images_contract(built: dict[str, images.BuiltImage]) -> None:
    pg = _config(built["postgres"])
    assert pg["Entrypoint"] == ["docker-entrypoint.sh"]
    assert pg["Cmd"] == ["postgres"]
    assert pg["User"] == f"{CHART.postgres_uid}:{CHART.postgres_uid}"
    assert _env(pg)["PGDATA"] == "/var/lib/postgresql/data"
    assert "/var/lib/postgresql/data" in pg["Volumes"]
    assert pg["StopSignal"] == "SIGINT"
    assert "5432/tcp" in pg["ExposedPorts"]

    rd = _config(built["redis"])
    assert rd["Entrypoint"] == ["docker-entrypoint.sh"]
    assert rd["Cmd"] == ["redis-server"]
    assert rd["User"] == f"{CHART.redis_uid}:{CHART.redis_uid}"
    assert rd["WorkingDir"] == "/data"
    assert "6379/tcp" in rd["ExposedPorts"]

    pause = _config(built["pause"])
    assert pause["Entrypoint"] == ["/pause"]


def test_nothing_of_the_machine_is_left_in_the_images(rootfs: dict[str, Path]) -> None:
    """The build mounts pip's configuration, the CA bundle and wheel directories: none of them,
    nor an empty mount point, stays in the image."""
    for name in ("app", "operator"):
        root = rootfs[name]
        assert not (root / "etc" / "pip.conf").exists()
        assert not (root / "root" / ".config").exists()
        assert not (root / "root" / "find-links").exists()
        assert not [p for p in root.glob("opt/*") if p.name != "payflow"], "only the venv in /opt"
        assert (root / "usr" / "local" / "bin" / "python").is_symlink()
        assert not list((root / "dev").glob("null")), "no device nodes: the runtime provides /dev"


# --- what runs from them ------------------------------------------------------------------------


def _chart_commands() -> dict[str, set[str]]:
    """The command of every container of the rendered chart (every option on), by image name."""
    commands: dict[str, set[str]] = {}
    for _, spec in pod_specs(render(values=ALL_OPTIONS)):
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            argv = container.get("command") or container.get("args") or []
            if argv:
                commands.setdefault(container["image"], set()).add(argv[0])
    return commands


def test_every_console_script_the_chart_runs_starts_from_its_image(
    built: dict[str, images.BuiltImage], rootfs: dict[str, Path]
) -> None:
    commands = _chart_commands()
    checked = set()
    for name in ("app", "operator"):
        config = _config(built[name])
        scripts = {config["Entrypoint"][0]}
        for tag in built[name].tags:
            scripts |= commands.get(tag, set())
        for script in sorted(scripts):
            out = _run(rootfs[name], config, [script, "--help"])
            assert out.returncode == 0, f"{script} --help in the {name} image:\n{out.stdout}\n{out.stderr}"
            assert "usage:" in out.stdout.lower()
            checked.add(script)
    assert {"payflow-app", "payflow-loadgen", "payflow-operator"} <= checked


def test_postgres_starts_as_the_chart_starts_it_and_keeps_its_data(
    built: dict[str, images.BuiltImage], rootfs: dict[str, Path], tmp_path: Path
) -> None:
    root, config = rootfs["postgres"], _config(built["postgres"])
    port = free_port()
    env = {
        "POSTGRES_DB": "payflow",
        "POSTGRES_USER": "payflow",
        "POSTGRES_PASSWORD": "pw-4-test",
        "PGDATA": "/var/lib/postgresql/data/pgdata",  # as the chart sets it
    }
    # The image's command, with the -c options a user may add, on a free loopback port.
    argv = [*config["Entrypoint"], *config["Cmd"], "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}"]
    dsn = f"postgresql://payflow:pw-4-test@127.0.0.1:{port}/payflow"
    probe = ["pg_isready", "-h", "127.0.0.1", "-p", str(port), "-U", "payflow", "-d", "payflow"]

    with _server("postgres-image", root, config, argv, tmp_path / "pg.log", env) as proc:
        conn = wait_for(lambda: psycopg.connect(dsn, connect_timeout=2), 180, "PostgreSQL from the image")
        with conn:
            row = conn.execute(
                "select current_user, current_database(), current_setting('server_version')"
            ).fetchone()
            assert row is not None
            assert row[:2] == ("payflow", "payflow")
            assert row[2].startswith(f"{images.postgres_major(CHART.postgres)}.")
            conn.execute("create table kept (x int)")
            conn.commit()
        ready = _run(root, config, probe)  # the chart's readiness and liveness probe
        assert ready.returncode == 0, ready.stdout + ready.stderr
        assert proc.running
    assert "PostgreSQL init process complete" in (tmp_path / "pg.log").read_text()
    pgdata = root / "var/lib/postgresql/data/pgdata"
    assert pgdata.stat().st_uid == CHART.postgres_uid
    assert "host all all all scram-sha-256" in (pgdata / "pg_hba.conf").read_text()

    # A restart on the same data directory (the StatefulSet's pod again): no second initdb.
    with _server("postgres-image", root, config, argv, tmp_path / "pg2.log", env):
        conn = wait_for(lambda: psycopg.connect(dsn, connect_timeout=2), 120, "PostgreSQL restarted")
        with conn:
            assert conn.execute("select count(*) from kept").fetchone() == (0,)
    assert "init process" not in (tmp_path / "pg2.log").read_text()


def test_postgres_started_as_root_hands_its_data_to_the_postgres_user(
    built: dict[str, images.BuiltImage], rootfs: dict[str, Path], tmp_path: Path
) -> None:
    root, config = rootfs["postgres"], _config(built["postgres"])
    port = free_port()
    env = {"POSTGRES_PASSWORD": "pw", "PGDATA": "/var/lib/postgresql/data/as-root"}
    argv = ["docker-entrypoint.sh", "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}"]
    with _server("postgres-root", root, config, argv, tmp_path / "pg.log", env, user="0:0") as proc:
        dsn = f"postgresql://postgres:pw@127.0.0.1:{port}/postgres"
        conn = wait_for(lambda: psycopg.connect(dsn, connect_timeout=2), 180, "PostgreSQL as root")
        conn.close()
        assert proc.pid is not None
        uid = Path(f"/proc/{proc.pid}/status").read_text().split("Uid:")[1].split()[0]
        assert uid == str(CHART.postgres_uid), "the server runs as the postgres user"
    assert (root / "var/lib/postgresql/data/as-root").stat().st_uid == CHART.postgres_uid


def test_redis_starts_with_the_chart_command_line(
    built: dict[str, images.BuiltImage], rootfs: dict[str, Path], tmp_path: Path
) -> None:
    root, config = rootfs["redis"], _config(built["redis"])
    port = free_port()
    # The chart's args, and where to listen here.
    argv = [
        *config["Entrypoint"],
        "redis-server",
        "--save",
        "",
        "--appendonly",
        "no",
        "--requirepass",
        "pw-4-test",
    ]
    argv += ["--bind", "127.0.0.1", "--port", str(port)]
    with _server("redis-image", root, config, argv, tmp_path / "redis.log", {}) as proc:
        client = redis.Redis(host="127.0.0.1", port=port, password="pw-4-test", socket_timeout=2)
        wait_for(client.ping, 60, "Redis from the image")
        assert client.config_get("protected-mode") == {"protected-mode": "no"}, "as the official image"
        assert client.config_get("save") == {"save": ""}
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, password="wrong").ping()
        # The chart's readiness probe: redis-cli ping, authenticated by REDISCLI_AUTH.
        ping = _run(root, config, ["redis-cli", "-p", str(port), "ping"], REDISCLI_AUTH="pw-4-test")
        assert ping.stdout.strip() == "PONG", ping.stderr
        assert proc.pid is not None
        uid = Path(f"/proc/{proc.pid}/status").read_text().split("Uid:")[1].split()[0]
        assert uid == str(CHART.redis_uid)


def test_pause_sleeps_until_sigterm_and_exits_0(built: dict[str, images.BuiltImage], tmp_path: Path) -> None:
    root = tmp_path / "pause"
    images.unpack(built["pause"].archive, root)
    assert [p.name for p in root.iterdir()] == ["pause"]
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen([str(root / "pause")])
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)  # it sleeps
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0


# --- into containerd -----------------------------------------------------------------------------


@pytest.fixture
def containerd() -> Iterator[list[str]]:
    """A containerd of its own (no CRI), in a mount namespace of its own; its ``ctr`` command."""
    binary, ctr = shutil.which("containerd"), shutil.which("ctr")
    assert binary, "containerd not found (Debian's containerd; make tools installs it)"
    assert ctr
    top = Path(tempfile.mkdtemp(prefix="pf-ctd-"))  # short: the socket path has a length limit
    sock = top / "c.sock"
    (top / "config.toml").write_text(
        f'version = 2\nroot = "{top}/root"\nstate = "{top}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",'
        ' "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",'
        ' "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]\n'
        f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n'
        '[debug]\n  address = ""\n[metrics]\n  address = ""\n'
    )
    unshare = shutil.which("unshare") or "unshare"
    proc = Process(
        name="containerd",
        argv=[unshare, "--mount", "--propagation", "private", binary, "--config", str(top / "config.toml")],
        log_path=top / "containerd.log",
    )
    proc.start()
    command = [ctr, "--address", str(sock)]
    try:
        proc.wait_ready(
            lambda: subprocess.run([*command, "version"], capture_output=True, timeout=5).returncode == 0, 30
        )
        yield command
    finally:
        proc.stop()
        assert not _mounts_under(top)
        shutil.rmtree(top)


def test_archives_import_into_containerd_under_the_kubelet_names_once(
    built: dict[str, images.BuiltImage], containerd: list[str]
) -> None:
    node_images = [built[n] for n in ("pause", "app", "operator", "postgres", "redis")]
    lines: list[str] = []
    imported = images.import_images([b.archive for b in node_images], containerd, log=lines.append)
    expected = {ref: b.digest for b in node_images for ref in b.refs}
    assert sorted(imported) == sorted(expected)
    present = images.present_images(containerd)
    assert {ref: present.get(ref) for ref in expected} == expected
    # The names as a pod spec gives them resolve to these (the CRI normalises them likewise).
    assert "docker.io/library/payflow-app:0.2.0" in present
    assert "docker.io/library/postgres:" + CHART.postgres.rpartition(":")[2] in present

    again = images.import_images([b.archive for b in node_images], containerd, log=lines.append)
    assert again == [], "already there with the same digests: nothing imported twice"
    print("\n".join(lines))


def test_a_second_build_finds_everything_cached(built: dict[str, images.BuiltImage]) -> None:
    t0 = time.monotonic()
    again = images.build_all()
    seconds = time.monotonic() - t0
    assert all(b.cached for b in again)
    assert {b.name: b.archive for b in again} == {n: b.archive for n, b in built.items()}
    assert seconds < 30, f"a warm build took {seconds:.1f}s"
    print(f"warm build in {seconds:.1f}s")


def test_no_build_container_is_left_in_the_cache_storage(built: dict[str, images.BuiltImage]) -> None:
    builder = images.Builder(images.cache_dir())
    out = subprocess.run(builder.buildah("containers", "--quiet"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == []
    assert not _mounts_under(builder.buildah_root)
    assert not os.listdir(images.cache_dir() / "tmp")
