"""``payflow-operator cleanup``: Helm's pre-delete hook. An uninstall must never leave a
namespace stuck with incidents whose finalizer nobody will remove, nor faults in force.

1. delete every incident targeting the release;
2. wait for the running operator to clear them and release their finalizers;
3. if it does not within the timeout (it is gone, or broken), restore the baseline on the
   faults ConfigMap, remove the pod-template stamp from the app Deployment, and remove the
   finalizers itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from payflow import faults as vocab
from payflow import naming
from payflow.operator import core

MERGE_PATCH = "application/merge-patch+json"


@dataclass
class CleanupReport:
    deleted: list[str] = field(default_factory=list)
    released_by_operator: bool = True
    forced: list[str] = field(default_factory=list)
    configmap_restored: bool = False

    def summary(self) -> str:
        if not self.deleted:
            return "no incidents to delete"
        if self.released_by_operator:
            return f"deleted {len(self.deleted)} incident(s); the operator cleared them"
        return (
            f"deleted {len(self.deleted)} incident(s); the operator did not release "
            f"{len(self.forced)} in time: baseline restored on the ConfigMap "
            f"({'changed' if self.configmap_restored else 'already at baseline'}), finalizers removed"
        )


def restore_patch(configmap: core.ConfigMap) -> dict[str, Any] | None:
    """The merge patch that puts the baseline back on the faults ConfigMap (pure)."""
    baseline_env, _ = core.baseline_of(configmap)
    baseline = vocab.FaultSet.from_env(baseline_env)
    data = core.data_patch(configmap.data, core.desired_data(baseline_env, baseline))
    patch: dict[str, Any] = {}
    if data:
        patch["data"] = data
    if configmap.annotations.get(naming.SOURCES_ANNOTATION) not in (None, "{}"):
        patch["metadata"] = {"annotations": {naming.SOURCES_ANNOTATION: "{}"}}
    return patch or None


def cleanup(
    api_client: Any,
    namespace: str,
    target: str,
    timeout: float = 30.0,
    log: Callable[[str], None] = print,
) -> CleanupReport:
    custom = client.CustomObjectsApi(api_client)
    core_api = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    report = CleanupReport()

    def remaining() -> list[dict[str, Any]]:
        items = custom.list_namespaced_custom_object(naming.GROUP, naming.VERSION, namespace, naming.PLURAL)
        return [i for i in items.get("items", []) if (i.get("spec") or {}).get("target") == target]

    for item in remaining():
        name = item["metadata"]["name"]
        try:
            custom.delete_namespaced_custom_object(
                naming.GROUP, naming.VERSION, namespace, naming.PLURAL, name
            )
            report.deleted.append(name)
            log(f"deleted {naming.KIND} {namespace}/{name}")
        except ApiException as exc:
            if exc.status != 404:
                raise

    deadline = time.monotonic() + timeout
    left = remaining()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = remaining()
    if not left:
        return report

    report.released_by_operator = False
    log(f"the operator did not release {len(left)} incident(s) within {timeout:.0f}s; cleaning up directly")
    try:
        body = core_api.read_namespaced_config_map(naming.faults_configmap_name(target), namespace)
        cm = core.ConfigMap.from_body(api_client.sanitize_for_serialization(body))
        patch = restore_patch(cm)
        if patch:
            core_api.patch_namespaced_config_map(cm.name, namespace, patch, _content_type=MERGE_PATCH)
            report.configmap_restored = True
    except ApiException as exc:
        if exc.status != 404:
            raise
    unstamp = {naming.DIGEST_ANNOTATION: None, naming.ROLLOUT_INCIDENTS_ANNOTATION: None}
    for dep in apps.list_namespaced_deployment(namespace, label_selector=naming.app_selector(target)).items:
        deployment = core.Deployment.from_body(api_client.sanitize_for_serialization(dep))
        patch = core.template_patch(deployment, unstamp)
        if patch:
            apps.patch_namespaced_deployment(deployment.name, namespace, patch, _content_type=MERGE_PATCH)
    for item in left:
        meta = item["metadata"]
        finalizers = [f for f in meta.get("finalizers") or [] if f != naming.FINALIZER]
        try:
            custom.patch_namespaced_custom_object(
                naming.GROUP,
                naming.VERSION,
                namespace,
                naming.PLURAL,
                meta["name"],
                {"metadata": {"finalizers": finalizers or None}},
                _content_type=MERGE_PATCH,
            )
            report.forced.append(meta["name"])
        except ApiException as exc:
            if exc.status != 404:
                raise
    log(json.dumps({"forced": report.forced, "configmapRestored": report.configmap_restored}))
    return report
