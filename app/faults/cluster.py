"""The reads of the Kubernetes API a replica makes for its fault history: its faults ConfigMap
(the incidents annotation and when it last changed) and pods (its own container status; whether
another replica's pod still exists). Blocking calls with short timeouts: run them in a thread.

RBAC: ``get`` on the faults ConfigMap (the watch's Role has it) and ``get`` on pods of the
namespace (helm/payflow/templates/app-serviceaccount.yaml)."""

from __future__ import annotations

import json
from typing import Any

TIMEOUT = (2.0, 5.0)  # connect, read (seconds)


class PodGone(LookupError):
    """The pod does not exist (404)."""


class ClusterReader:
    def __init__(self, api_client: Any, namespace: str, timeout: tuple[float, float] = TIMEOUT) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.timeout = timeout

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    def configmap(self, name: str) -> dict[str, Any]:
        """The ConfigMap's JSON as the API serves it (``metadata.managedFields`` included)."""
        resp = self._core().read_namespaced_config_map(
            name, self.namespace, _preload_content=False, _request_timeout=self.timeout
        )
        return dict(json.loads(resp.data))

    def pod(self, name: str) -> dict[str, Any]:
        """The pod's JSON; :class:`PodGone` when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        try:
            resp = self._core().read_namespaced_pod(
                name, self.namespace, _preload_content=False, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                raise PodGone(name) from exc
            raise
        return dict(json.loads(resp.data))
