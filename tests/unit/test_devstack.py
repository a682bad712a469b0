"""The pure parts of the local stack: component order, saved configuration, tool lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from payflow.devstack import tools
from payflow.devstack.stack import LocalStack, StackConfig, with_requirements


def test_components_bring_what_they_need_in_start_order() -> None:
    assert with_requirements(["kube-controller-manager"]) == (
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
    )
    assert with_requirements(["redis", "kube-apiserver"]) == ("etcd", "redis", "kube-apiserver")
    with pytest.raises(ValueError, match="unknown components \\['mysql'\\]"):
        with_requirements(["mysql"])


def test_config_is_saved_and_reused_with_the_same_ports_and_secrets(tmp_path: Path) -> None:
    config = StackConfig(workdir=tmp_path / "s", components=("postgres", "kube-apiserver"))
    assert set(config.ports) == {"postgres", "etcd", "etcd-peer", "kube-apiserver"}
    config.save()
    assert oct(config.state_file.stat().st_mode & 0o777) == "0o600"  # it holds passwords
    again = StackConfig.load(tmp_path / "s")
    assert again == config


def test_clients_get_urls_with_the_saved_credentials(tmp_path: Path) -> None:
    config = StackConfig(workdir=tmp_path, components=("postgres", "redis"))
    stack = LocalStack(config)
    env = stack.env()
    assert set(env) == {"DATABASE_URL", "REDIS_URL"}
    assert env["DATABASE_URL"] == (
        f"postgresql://postgres:{config.pg_password}@127.0.0.1:{config.ports['postgres']}/payflow"
    )
    assert env["REDIS_URL"].endswith(f"@127.0.0.1:{config.ports['redis']}/0")


def test_pinned_versions_come_from_one_file() -> None:
    v = tools.pinned_versions()
    assert v["KUBERNETES_VERSION"].startswith("v1.")
    assert int(v["KUBERNETES_VERSION"].split(".")[1]) >= 34
    assert v["ETCD_VERSION"].startswith("v3.")
    assert v["HELM_VERSION"].startswith("v3.")


def test_a_given_assets_directory_wins_over_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = tmp_path / "assets"
    given.mkdir()
    binary = given / "etcd"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(given))
    assert tools.find("etcd").path == binary


def test_the_cache_is_keyed_by_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYFLOW_CACHE", str(tmp_path))
    monkeypatch.delenv("PAYFLOW_ASSETS", raising=False)
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    with pytest.raises(tools.ToolMissingError, match="run `make tools`") as err:
        tools.find("kube-apiserver")
    assert f"kubernetes-{tools.pinned_versions()['KUBERNETES_VERSION']}" in str(err.value)
    assert os.fspath(tmp_path) in str(err.value)
