"""``payflow-operator cleanup``: Helm's pre-delete hook. An uninstall leaves no incident of the
release and no fault in force, whether the operator is there to clear them or not.

1. delete every incident targeting the release (no finalizer holds them: they go at once);
2. wait for the running operator to clear their faults: the faults ConfigMap back at its
   baseline and naming no incident, no rollout stamp on the app Deployment;
3. if that does not happen within the timeout (the operator is gone, or broken), restore the
   baseline and remove the stamp itself, and remove the finalizer ``payflow.dev/clear-faults``
   that operators before level-based clearing put on incidents, so that none stays behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from payflow import faults as vocab
from payflow import naming
from payflow.operator import core

MERGE_PATCH = "application/merge-patch+json"
UNSTAMP = {naming.DIGEST_ANNOTATION: None, naming.ROLLOUT_INCIDENTS_ANNOTATION: None}


@dataclass
class CleanupReport:
    deleted: list[str] = field(default_factory=list)
    cleared_by_operator: bool = True
    timeout: float = 0.0
    configmap_restored: bool = False
    unstamped: list[str] = field(default_factory=list)  # Deployments
    forced: list[str] = field(default_factory=list)  # incidents whose old finalizer was removed

    def summary(self) -> str:
        if self.cleared_by_operator:
            if not self.deleted:
                return "no incidents to delete; no faults in force"
            return f"deleted {len(self.deleted)} incident(s); the operator cleared their faults"
        return (
            f"deleted {len(self.deleted)} incident(s); the operator did not clear the faults within "
            f"{self.timeout:.0f}s: baseline restored on the ConfigMap "
            f"({'changed' if self.configmap_restored else 'already at baseline'}), rollout stamp "
            f"removed from {len(self.unstamped)} Deployment(s), finalizers removed from "
            f"{len(self.forced)} incident(s)"
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


def cleared(
    incidents: Sequence[dict[str, Any]],
    configmap: core.ConfigMap | None,
    deployments: Sequence[core.Deployment],
) -> bool:
    """Nothing of the release's incidents is left (pure): none exists, the ConfigMap is at its
    baseline naming none, and no pod template is stamped."""
    return (
        not incidents
        and (configmap is None or restore_patch(configmap) is None)
        and all(core.template_patch(d, UNSTAMP) is None for d in deployments)
    )


class _Target:
    """The reads and writes of one release's objects, with the hook's RBAC."""

    def __init__(self, api_client: Any, namespace: str, target: str) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.target = target
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)

    def _plain(self, obj: Any) -> dict[str, Any]:
        return dict(self.api_client.sanitize_for_serialization(obj))

    def incidents(self) -> list[dict[str, Any]]:
        where = (naming.GROUP, naming.VERSION, self.namespace, naming.PLURAL)
        items = self.custom.list_namespaced_custom_object(*where).get("items", [])
        return [i for i in items if (i.get("spec") or {}).get("target") == self.target]

    def configmap(self) -> core.ConfigMap | None:
        try:
            body = self.core.read_namespaced_config_map(
                naming.faults_configmap_name(self.target), self.namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return core.ConfigMap.from_body(self._plain(body))

    def deployments(self) -> list[core.Deployment]:
        found = self.apps.list_namespaced_deployment(
            self.namespace, label_selector=naming.app_selector(self.target)
        )
        return [core.Deployment.from_body(self._plain(d)) for d in found.items]

    def delete_incident(self, name: str) -> bool:
        try:
            self.custom.delete_namespaced_custom_object(
                naming.GROUP, naming.VERSION, self.namespace, naming.PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def drop_finalizer(self, item: dict[str, Any]) -> bool:
        meta = item["metadata"]
        if naming.FINALIZER not in (meta.get("finalizers") or []):
            return False
        finalizers = [f for f in meta["finalizers"] if f != naming.FINALIZER]
        try:
            self.custom.patch_namespaced_custom_object(
                naming.GROUP,
                naming.VERSION,
                self.namespace,
                naming.PLURAL,
                meta["name"],
                {"metadata": {"finalizers": finalizers or None}},
                _content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True


def cleanup(
    api_client: Any,
    namespace: str,
    target: str,
    timeout: float = 30.0,
    log: Callable[[str], None] = print,
) -> CleanupReport:
    release = _Target(api_client, namespace, target)
    report = CleanupReport(timeout=timeout)
    for item in release.incidents():
        name = item["metadata"]["name"]
        if release.delete_incident(name):
            report.deleted.append(name)
            log(f"deleted {naming.KIND} {namespace}/{name}")

    deadline = time.monotonic() + timeout
    while True:
        if cleared(release.incidents(), release.configmap(), release.deployments()):
            return report
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)

    report.cleared_by_operator = False
    log(f"the operator did not clear the faults of {target} within {timeout:.0f}s; clearing them directly")
    configmap = release.configmap()
    patch = restore_patch(configmap) if configmap is not None else None
    if configmap is not None and patch:
        release.core.patch_namespaced_config_map(configmap.name, namespace, patch, _content_type=MERGE_PATCH)
        report.configmap_restored = True
    for deployment in release.deployments():
        unstamp = core.template_patch(deployment, UNSTAMP)
        if unstamp:
            release.apps.patch_namespaced_deployment(
                deployment.name, namespace, unstamp, _content_type=MERGE_PATCH
            )
            report.unstamped.append(deployment.name)
    for item in release.incidents():  # held by an old operator's finalizer, or created meanwhile
        name = item["metadata"]["name"]
        if not item["metadata"].get("deletionTimestamp") and release.delete_incident(name):
            report.deleted.append(name)
        if release.drop_finalizer(item):
            report.forced.append(name)
    log(
        json.dumps(
            {
                "forced": report.forced,
                "configmapRestored": report.configmap_restored,
                "unstamped": report.unstamped,
            }
        )
    )
    return report
