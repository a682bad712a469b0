"""The pure parts of the local demo: the kubelet's back-off, a pod's environment, rollouts."""

from __future__ import annotations

from typing import Any

from payflow.devstack.demo import pod_env, template_hash
from payflow.devstack.workloads import BACKOFF_CAP, crash_backoff


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [crash_backoff(n) for n in range(0, 5)] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert crash_backoff(50) == BACKOFF_CAP


def deployment(env: list[dict[str, Any]], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "payflow-api", "namespace": "demo"},
        "spec": {
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "containers": [
                        {"name": "app", "envFrom": [{"configMapRef": {"name": "payflow-faults"}}], "env": env}
                    ]
                },
            }
        },
    }


def test_pod_env_follows_the_kubelet_precedence() -> None:
    d = deployment(
        [
            {"name": "PAYFLOW_RELEASE", "value": "payflow"},
            {"name": "INJECT_LATENCY_MS", "value": "7"},  # env wins over envFrom
            {"name": "PAYFLOW_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "PAYFLOW_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
        ]
    )
    env = pod_env(d, {"payflow-faults": {"INJECT_LATENCY_MS": "200", "INJECT_OOM": "false"}}, "pod-0")
    assert env == {
        "INJECT_LATENCY_MS": "7",
        "INJECT_OOM": "false",
        "PAYFLOW_RELEASE": "payflow",
        "PAYFLOW_NAMESPACE": "demo",
        "PAYFLOW_POD_NAME": "pod-0",
    }


def test_a_rollout_is_a_change_of_the_pod_template() -> None:
    base = deployment([])
    assert template_hash(base) == template_hash(deployment([]))
    stamped = deployment([], {"payflow.dev/faults-digest": "abc"})
    assert template_hash(stamped) != template_hash(base)
    rescaled = deployment([])
    rescaled["spec"]["replicas"] = 3  # scaling is not a rollout
    assert template_hash(rescaled) == template_hash(base)
