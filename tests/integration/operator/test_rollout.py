"""delivery: rollout, with the real kube-controller-manager: the stamp makes a new ReplicaSet
revision; ending the incident removes it, and the Deployment controller rolls back to the
original ReplicaSet as a new revision (like a rollback to last known good)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from payflow import naming
from tests.integration.operator.conftest import Cluster, Operator, expected, incident
from tests.support import wait_for

REVISION = "deployment.kubernetes.io/revision"
OOM: dict[str, Any] = {"oom": {}}


def _replicasets(cluster: Cluster) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "replicasets", "-n", cluster.namespace, "-o", "json").stdout
    return list(json.loads(out)["items"])


def _newest(cluster: Cluster) -> dict[str, Any] | None:
    sets = _replicasets(cluster)
    if not sets:
        return None
    return max(sets, key=lambda rs: int(rs["metadata"]["annotations"].get(REVISION, "0")))


def _at_revision(cluster: Cluster, revision: int) -> dict[str, Any] | None:
    rs = _newest(cluster)
    return rs if rs is not None and _revision(rs) == revision else None


def _revision(rs: dict[str, Any]) -> int:
    return int(rs["metadata"]["annotations"][REVISION])


def _template(rs: dict[str, Any]) -> dict[str, Any]:
    template = json.loads(json.dumps(rs["spec"]["template"]))
    template["metadata"]["labels"].pop("pod-template-hash", None)
    return dict(template)


@pytest.mark.slow
def test_rollout_makes_a_revision_and_ending_rolls_back(operator: Operator, release: Cluster) -> None:
    baseline_rs = wait_for(lambda: _newest(release), 20, "the first ReplicaSet")
    assert _revision(baseline_rs) == 1

    release.apply(incident("caching-incident", OOM, delivery="rollout"))
    wait_for(lambda: release.phase("caching-incident") == "Active", 10, "Active")
    assert release.faults() == expected(OOM)
    deployment = release.get("deployment", "payflow-api")
    assert deployment is not None
    stamp = deployment["spec"]["template"]["metadata"]["annotations"]
    assert stamp[naming.ROLLOUT_INCIDENTS_ANNOTATION] == "caching-incident"
    assert stamp[naming.DIGEST_ANNOTATION] == expected(OOM).digest()

    bad = wait_for(lambda: _at_revision(release, 2), 20, "revision 2")
    assert bad["metadata"]["name"] != baseline_rs["metadata"]["name"]
    assert (
        bad["spec"]["template"]["metadata"]["annotations"][naming.DIGEST_ANNOTATION]
        == stamp[naming.DIGEST_ANNOTATION]
    )

    release.delete(naming.PLURAL, "caching-incident", wait=True)
    good = wait_for(lambda: _at_revision(release, 3), 20, "revision 3")
    # The original ReplicaSet came back as the newest revision: the template is the baseline's.
    assert good["metadata"]["name"] == baseline_rs["metadata"]["name"]
    assert _template(good) == _template(baseline_rs)
    assert naming.DIGEST_ANNOTATION not in (good["spec"]["template"]["metadata"].get("annotations") or {})
    wait_for(lambda: release.faults() == expected(), 5, "the baseline back")
    wait_for(
        lambda: {"Injected", "Cleared"} <= release.event_reasons("payflow-api"),
        10,
        "events on the Deployment",
    )


def test_rollout_waits_for_the_deployment(operator: Operator, cluster: Cluster) -> None:
    from tests.integration.operator.conftest import configmap_manifest, deployment_manifest

    cluster.apply(configmap_manifest())
    cluster.apply(incident("early-rollout", OOM, delivery="rollout"))
    body = wait_for(
        lambda: (
            (b := cluster.incident("early-rollout")) and b.get("status", {}).get("phase") == "Pending" and b
        ),
        10,
        "Pending",
    )
    injected = {c["type"]: c for c in body["status"]["conditions"]}["Injected"]
    assert injected["reason"] == "DeploymentNotFound"
    cluster.apply(deployment_manifest())
    wait_for(lambda: cluster.phase("early-rollout") == "Active", 10, "Active once the Deployment exists")

    # Removing the stamp by hand does not end the bad deploy: the operator puts it back.
    def stamp() -> str | None:
        body = cluster.get("deployment", "payflow-api")
        assert body is not None
        return (body["spec"]["template"]["metadata"].get("annotations") or {}).get(naming.DIGEST_ANNOTATION)

    digest = wait_for(stamp, 10, "the stamp")
    unstamp = json.dumps(
        {"spec": {"template": {"metadata": {"annotations": {naming.DIGEST_ANNOTATION: None}}}}}
    )
    cluster.kubectl(
        "patch", "deployment", "payflow-api", "-n", cluster.namespace, "--type=merge", "-p", unstamp
    )
    wait_for(lambda: stamp() == digest, 10, "the stamp put back")
