"""The operator's I/O: the few API calls one target reconcile makes.

The official client is synchronous; its calls run in a small thread pool of their own, so the
kopf event loop never blocks. Bodies are read as plain JSON (``_preload_content=False``): the
pure core takes dicts, and skipping the model classes saves CPU.

A call the API server refuses (HTTP 401) is made once more with the credentials read again
(``reload``): a token rewritten in the kubeconfig, or a ServiceAccount token renewed, is used
from then on, as kopf's own login does (``credentials.py``).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from payflow import naming

T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"


class Conflict(Exception):
    """The object changed since it was read (HTTP 409): read again and decide again."""


def new_api_client(kubeconfig: str | None = None) -> Any:
    """An ApiClient from ``kubeconfig`` (or $KUBECONFIG, ~/.kube/config), else in-cluster."""
    try:
        return config.new_client_from_config(config_file=kubeconfig)
    except config.ConfigException:
        if kubeconfig:
            raise
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)


def _json(response: Any) -> Any:
    """The body of an unpreloaded response; the connection goes back to the pool (else every
    request would pay for a new TLS handshake)."""
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


class Kube:
    """Typed wrappers of the calls the operator needs (see the RBAC in docs/incidents.md)."""

    def __init__(self, api_client: Any, workers: int = 8, reload: Callable[[], Any] | None = None) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._reload = reload
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.api_client.close()

    def _renew_token(self) -> bool:
        """Read the credentials again; whether the token changed (it is then used)."""
        if self._reload is None:
            return False
        fresh = self._reload()
        fresh.close()  # only its configuration is kept
        new, ours = fresh.configuration, self.api_client.configuration
        if (new.api_key, new.api_key_prefix) == (ours.api_key, ours.api_key_prefix):
            return False
        # The kubeconfig loader's hook sets the token it loaded before every request: the new
        # loader's, or the old token would come back at once.
        ours.api_key, ours.api_key_prefix = dict(new.api_key), dict(new.api_key_prefix)
        ours.refresh_api_key_hook = new.refresh_api_key_hook
        return True

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        try:
            try:
                return await loop.run_in_executor(self._pool, call)
            except ApiException as exc:
                if exc.status != 401 or not await loop.run_in_executor(self._pool, self._renew_token):
                    raise
                return await loop.run_in_executor(self._pool, call)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from exc
            raise

    # --- reads -----------------------------------------------------------------------------

    async def get_namespace(self, namespace: str) -> dict[str, Any] | None:
        """The namespace, or None when it does not exist (any more)."""
        try:
            return dict(_json(await self._run(self.core.read_namespace, namespace, _preload_content=False)))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list_incidents(self, namespace: str) -> list[dict[str, Any]]:
        body = _json(
            await self._run(
                self.custom.list_namespaced_custom_object,
                naming.GROUP,
                naming.VERSION,
                namespace,
                naming.PLURAL,
                _preload_content=False,
            )
        )
        return list(body.get("items") or [])

    async def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(
                _json(
                    await self._run(
                        self.core.read_namespaced_config_map, name, namespace, _preload_content=False
                    )
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list_deployments(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        body = _json(
            await self._run(
                self.apps.list_namespaced_deployment,
                namespace,
                label_selector=selector,
                # From the API server's cache, without waiting for it to catch up with etcd (a
                # consistent list of a quiet resource waits for a progress notification, ~100 ms).
                # A stale answer only costs a repeated, idempotent patch; changes are watched.
                resource_version="0",
                _preload_content=False,
            )
        )
        return list(body.get("items") or [])

    # --- writes ----------------------------------------------------------------------------

    async def patch_configmap(self, namespace: str, name: str, patch: dict[str, Any]) -> str:
        """Merge-patch the ConfigMap; its new resourceVersion. A resourceVersion in the patch
        makes it conditional (Conflict when the ConfigMap changed since it was read)."""
        body = _json(
            await self._run(
                self.core.patch_namespaced_config_map,
                name,
                namespace,
                patch,
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        )
        return str(body["metadata"]["resourceVersion"])

    async def patch_deployment(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        _json(
            await self._run(
                self.apps.patch_namespaced_deployment,
                name,
                namespace,
                patch,
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        )

    async def patch_incident_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            _json(
                await self._run(
                    self.custom.patch_namespaced_custom_object_status,
                    naming.GROUP,
                    naming.VERSION,
                    namespace,
                    naming.PLURAL,
                    name,
                    {"status": status},
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                )
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing left to describe
                raise
