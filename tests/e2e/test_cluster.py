"""Against a real cluster: the nodes are Ready and the API answers as the local stack does."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client, config


def test_cluster_has_a_ready_node(e2e_kubeconfig: Path) -> None:
    api = config.new_client_from_config(config_file=str(e2e_kubeconfig))
    nodes = client.CoreV1Api(api).list_node().items
    ready = [
        n.metadata.name
        for n in nodes
        for c in (n.status.conditions or [])
        if c.type == "Ready" and c.status == "True"
    ]
    assert ready, f"no Ready node among {[n.metadata.name for n in nodes]}"
