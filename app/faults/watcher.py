"""Watch the faults ConfigMap through the Kubernetes API, in a thread of its own.

List (to learn the state and a resourceVersion), then watch from that version; a 410 Gone
lists again; an API server outage reconnects with capped, jittered back-off. Nothing here
changes the faults in force on an error: they stay as they are while the API is away.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from payflow.app import metrics

log = logging.getLogger("payflow.app.faults.watch")


@dataclass(frozen=True)
class ConfigMapEvent:
    kind: str  # "LISTED", "ADDED", "MODIFIED", "DELETED", "MISSING"
    data: dict[str, str]
    annotations: dict[str, str]
    resource_version: str | None


def backoff_delays(base: float = 0.2, cap: float = 5.0) -> Callable[[int], float]:
    """Delay before the n-th retry (n from 0): exponential, capped, with full jitter above base."""

    def delay(n: int) -> float:
        upper = min(cap, base * (2**n))
        return base + random.uniform(0, max(0.0, upper - base))

    return delay


def make_api_client(kubeconfig: str | None) -> Any | None:
    """A kubernetes ApiClient from a kubeconfig, else in-cluster; None when neither exists."""
    from kubernetes import client, config

    if kubeconfig:
        for path in kubeconfig.split(os.pathsep):
            if path and os.path.exists(path):
                return config.new_client_from_config(config_file=path)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    return None


class ConfigMapWatcher:
    def __init__(
        self,
        api_client: Any,
        namespace: str,
        name: str,
        on_event: Callable[[ConfigMapEvent], None],
        timeout_s: int = 240,
    ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.name = name
        self.on_event = on_event
        self.timeout_s = timeout_s
        self.connected = False
        self.last_error: str | None = None
        self.resource_version: str | None = None
        self._stop = threading.Event()
        self._watch: Any = None
        self._thread = threading.Thread(target=self._run, name="configmap-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(timeout=2)

    def _set_connected(self, up: bool) -> None:
        self.connected = up
        metrics.FAULT_WATCH_UP.set(1 if up else 0)

    def _run(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self.api_client)
        delay = backoff_delays()
        failures = 0
        selector = f"metadata.name={self.name}"
        while not self._stop.is_set():
            try:
                listed = core.list_namespaced_config_map(
                    self.namespace, field_selector=selector, _request_timeout=(5, 30)
                )
                rv = listed.metadata.resource_version
                if listed.items:
                    cm = listed.items[0]
                    self.on_event(
                        ConfigMapEvent(
                            "LISTED",
                            dict(cm.data or {}),
                            dict(cm.metadata.annotations or {}),
                            cm.metadata.resource_version,
                        )
                    )
                else:
                    self.on_event(ConfigMapEvent("MISSING", {}, {}, rv))
                if failures:
                    log.info("configmap watch reconnected after %d failures", failures)
                failures = 0
                self.last_error = None
                self._set_connected(True)
                self._watch_from(core, selector, rv)
            except Exception as exc:
                self._set_connected(False)
                if self._stop.is_set():
                    break
                status = getattr(exc, "status", None)
                if status == 410:
                    log.info("configmap watch expired (410 Gone); listing again")
                    continue
                self.last_error = f"{type(exc).__name__}: {str(exc)[:300]}"
                wait = delay(failures)
                failures += 1
                log.warning(
                    "configmap watch failed (%s); the faults in force stay; retrying in %.1fs",
                    self.last_error,
                    wait,
                    extra={"configmap": self.name},
                )
                self._stop.wait(wait)
        self._set_connected(False)

    def _watch_from(self, core: Any, selector: str, rv: str) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            self._watch = watch.Watch()
            for event in self._watch.stream(
                core.list_namespaced_config_map,
                self.namespace,
                field_selector=selector,
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=self.timeout_s,
                _request_timeout=(5, self.timeout_s + 15),
            ):
                kind = event["type"]
                raw = event.get("raw_object") or {}
                meta = raw.get("metadata") or {}
                rv = meta.get("resourceVersion", rv)
                self.resource_version = rv
                if kind == "BOOKMARK":
                    continue
                if kind == "ERROR":
                    code = raw.get("code")
                    err = RuntimeError(f"watch error: {raw.get('reason')}: {raw.get('message')}")
                    err.status = code  # type: ignore[attr-defined]
                    raise err
                self.on_event(
                    ConfigMapEvent(kind, dict(raw.get("data") or {}), dict(meta.get("annotations") or {}), rv)
                )
                if self._stop.is_set():
                    return
            # the server ended this watch (timeout_seconds): watch again from the last version
