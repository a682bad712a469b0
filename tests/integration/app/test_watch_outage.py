"""The ConfigMap watch through an API server outage: the faults stay, the watch comes back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from payflow.devstack.stack import LocalStack, StackConfig
from payflow.naming import faults_configmap_name
from tests.integration.app.conftest import StartApp
from tests.support import wait_for


@pytest.fixture
def own_apiserver(tmp_path: Path) -> Iterator[LocalStack]:
    """etcd and kube-apiserver of this test alone, so the API server can be stopped."""
    stack = LocalStack(StackConfig(workdir=tmp_path / "kube", components=("kube-apiserver",)))
    stack.start()
    yield stack
    stack.stop()


@pytest.mark.slow
def test_faults_stay_in_force_while_the_api_server_is_away(
    start_app: StartApp, own_apiserver: LocalStack
) -> None:
    api = config.new_client_from_config(config_file=str(own_apiserver.kubeconfig))
    core: Any = client.CoreV1Api(api)
    name = faults_configmap_name("outage")
    core.create_namespaced_config_map(
        "default",
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"INJECT_LATENCY_MS": "20"}),
    )
    app = start_app(
        {
            "KUBECONFIG": str(own_apiserver.kubeconfig),
            "PAYFLOW_NAMESPACE": "default",
            "PAYFLOW_WATCH_FAULTS": "true",
        },
        release="outage",
    )

    def latency() -> dict[str, Any]:
        fault: dict[str, Any] = app.client.get("/api/config").json()["faults"]["latency"]
        return fault

    wait_for(
        lambda: latency()["active"] and latency()["source"] == "configmap", 10, "the ConfigMap's latency"
    )

    own_apiserver.stop_component("kube-apiserver")
    wait_for(
        lambda: not app.client.get("/api/config").json()["configmap"]["connected"], 30, "the watch to notice"
    )
    assert latency()["active"] is True
    assert latency()["params"]["delayMs"] == 20
    assert app.client.get("/api/stats").status_code == 200

    own_apiserver.start_component("kube-apiserver")
    wait_for(
        lambda: app.client.get("/api/config").json()["configmap"]["connected"], 30, "the watch to reconnect"
    )
    core.patch_namespaced_config_map(name, "default", {"data": {"INJECT_LATENCY_MS": "0"}})
    wait_for(lambda: not latency()["active"], 10, "the change after the outage")
    assert "configmap watch failed" in app.log
    api.close()
