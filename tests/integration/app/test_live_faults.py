"""Live change through the ConfigMap on the real API server: the app watches it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client

from payflow.naming import SOURCES_ANNOTATION, faults_configmap_name
from tests.integration.app.conftest import StartApp
from tests.support import wait_for


def _patch(
    core: Any, ns: str, name: str, data: dict[str, str], annotations: dict[str, str] | None = None
) -> None:
    body: dict[str, Any] = {"data": data}
    if annotations is not None:
        body["metadata"] = {"annotations": annotations}
    core.patch_namespaced_config_map(name, ns, body)


def test_configmap_changes_reach_the_app(
    start_app: StartApp, kube_api: object, kubeconfig: Path, namespace: str, postgres_url: str, redis_url: str
) -> None:
    core = client.CoreV1Api(kube_api)
    release = "shop"
    name = faults_configmap_name(release)
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data={"INJECT_LATENCY_MS": "0"}),
    )
    app = start_app(
        {
            "KUBECONFIG": str(kubeconfig),
            "PAYFLOW_NAMESPACE": namespace,
            "PAYFLOW_WATCH_FAULTS": "true",
            "INJECT_LATENCY_MS": "0",
        },
        release=release,
    )
    wait_for(
        lambda: app.client.get("/api/config").json()["configmap"]["connected"], 10, "the watch to connect"
    )

    # a valid change: in force within 1 s, with its incident
    sources = {"latency": [{"incident": "checkout-latency", "expiresAt": "2030-01-01T00:00:00Z"}]}
    _patch(core, namespace, name, {"INJECT_LATENCY_MS": "30"}, {SOURCES_ANNOTATION: json.dumps(sources)})
    t0 = time.monotonic()
    latency = wait_for(
        lambda: (f := app.client.get("/api/config").json()["faults"]["latency"])["active"] and f,
        1.0,
        "the ConfigMap change to reach /api/config",
    )
    assert time.monotonic() - t0 < 1.0
    assert latency["params"]["delayMs"] == 30
    assert latency["source"] == "configmap"
    assert latency["incidents"] == sources["latency"]
    assert 'payflow_fault_active{fault="latency"} 1.0' in app.client.get("/metrics").text

    # an invalid change: rejected, the last good state stays, the rejection is visible
    _patch(core, namespace, name, {"INJECT_LATENCY_MS": "fast"})
    rejected = wait_for(
        lambda: app.client.get("/api/config").json()["last_rejected"], 5, "the rejection in /api/config"
    )
    assert "INJECT_LATENCY_MS" in rejected["reason"]
    assert rejected["source"] == "configmap"
    config = app.client.get("/api/config").json()
    assert config["faults"]["latency"]["active"] is True
    assert config["faults"]["latency"]["params"]["delayMs"] == 30
    assert 'payflow_fault_config_rejections_total{source="configmap"} 1.0' in app.client.get("/metrics").text
    assert "rejected fault configuration" in app.log

    # switched off: the history holds on and off, newest first, with source and incidents
    _patch(core, namespace, name, {"INJECT_LATENCY_MS": "0"}, {SOURCES_ANNOTATION: "{}"})
    wait_for(
        lambda: not app.client.get("/api/config").json()["faults"]["latency"]["active"], 5, "latency off"
    )
    history = wait_for(
        lambda: (
            (h := app.client.get("/api/faults/history", params={"fault": "latency"}).json()["items"])
            and len(h) >= 2
            and h
        ),
        5,
        "two transitions in the history",
    )
    assert [h["change"] for h in history[:2]] == ["off", "on"]
    assert history[1]["source"] == "configmap"
    assert history[1]["incidents"] == sources["latency"]
    assert history[1]["params"] == {"delayMs": 30, "jitterMs": 0}
    since = history[0]["at"]
    newer = app.client.get("/api/faults/history", params={"since": since, "limit": 1}).json()["items"]
    assert len(newer) == 1
    assert newer[0]["change"] == "off"
    # secrets never appear
    text = app.client.get("/api/config").text
    for url in (postgres_url, redis_url):
        password = urlsplit(url).password
        assert password
        assert password not in text
    assert "***" in text
